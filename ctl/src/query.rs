//! The query commands: each builds its URL of the HTTP API (pure), GETs the
//! JSON answer and prints it (a table, a chart, or the JSON itself).

use serde::de::DeserializeOwned;
use telemetry_proto::json::{Counters, DeviceCount, EventJson, Leaderboard, Stats, Window};

use crate::cli::{CounterArgs, DevicesArgs, LeaderboardArgs, QueryTarget, RecentArgs, WindowArgs};
use crate::output;
use crate::{Error, Result};

pub async fn devices(a: &DevicesArgs) -> Result<()> {
    let rows: Vec<DeviceCount> = get_json(&a.target, &devices_url(a)).await?;
    output::print(&a.target, &rows, || output::devices_table(&rows));
    Ok(())
}

pub async fn counter(a: &CounterArgs) -> Result<()> {
    let c: Counters = get_json(&a.target, &counter_url(a)).await?;
    output::print(&a.target, &c, || output::counters_table(&c));
    Ok(())
}

pub async fn leaderboard(a: &LeaderboardArgs) -> Result<()> {
    let l: Leaderboard = get_json(&a.target, &leaderboard_url(a)).await?;
    output::print(&a.target, &l, || output::leaderboard_table(&l));
    Ok(())
}

pub async fn window(a: &WindowArgs) -> Result<()> {
    let w: Window = get_json(&a.target, &window_url(a)).await?;
    output::print(&a.target, &w, || output::window_chart(&w, a.sum));
    Ok(())
}

pub async fn recent(a: &RecentArgs) -> Result<()> {
    let events: Vec<EventJson> = get_json(&a.target, &recent_url(a)).await?;
    output::print(&a.target, &events, || output::recent_table(&events));
    Ok(())
}

pub async fn stats(t: &QueryTarget) -> Result<()> {
    let s: Stats = get_json(t, &format!("{}/api/v1/stats", t.http)).await?;
    output::print(t, &s, || output::stats_table(&s));
    Ok(())
}

fn devices_url(a: &DevicesArgs) -> String {
    let mut url = format!(
        "{}/api/v1/devices?limit={}&sort={}",
        a.target.http, a.limit, a.sort
    );
    if let Some(d) = &a.device {
        url.push_str(&format!("&deviceId={d}"));
    }
    url
}

fn counter_url(a: &CounterArgs) -> String {
    format!(
        "{}/api/v1/counters?types={}",
        a.target.http,
        a.types.join(",")
    )
}

fn leaderboard_url(a: &LeaderboardArgs) -> String {
    let mut url = format!(
        "{}/api/v1/leaderboards/{}?topN={}",
        a.target.http, a.name, a.top
    );
    if let Some(b) = a.bucket {
        url.push_str(&format!("&bucket={b}"));
    }
    url
}

fn window_url(a: &WindowArgs) -> String {
    format!(
        "{}/api/v1/windows/{}?minutes={}",
        a.target.http, a.name, a.minutes
    )
}

fn recent_url(a: &RecentArgs) -> String {
    let mut url = format!("{}/api/v1/devices/{}/recent", a.target.http, a.device);
    if let Some(l) = a.limit {
        url.push_str(&format!("?limit={l}"));
    }
    url
}

async fn get_json<T: DeserializeOwned>(target: &QueryTarget, url: &str) -> Result<T> {
    let client = if crate::tls::is_https(url) {
        crate::tls::http_client(target.ca.as_deref())?
    } else {
        reqwest::Client::new()
    };
    let mut request = client.get(url);
    if let Some(key) = &target.api_key {
        request = request.header(reqwest::header::AUTHORIZATION, key.bearer());
    }
    let response = request
        .send()
        .await
        .map_err(|cause| match crate::tls::untrusted(&cause) {
            Some(detail) => Error::Untrusted {
                url: url.to_string(),
                detail,
            },
            None => Error::Request {
                url: url.to_string(),
                cause,
            },
        })?;
    let status = response.status();
    let body = response.text().await.map_err(Error::ReadAnswer)?;
    if !status.is_success() {
        return Err(Error::Refused {
            status,
            message: error_message(body),
        });
    }
    serde_json::from_str(&body).map_err(|cause| Error::Answer {
        url: url.to_string(),
        cause,
    })
}

/// The message of the API's error answer (`{"error": {"message": ...}}`),
/// or the whole body when it is not one.
fn error_message(body: String) -> String {
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> QueryTarget {
        QueryTarget {
            http: "http://h:8000".into(),
            ca: None,
            api_key: None,
            json: false,
        }
    }

    #[test]
    fn optional_parameters_are_added_only_when_given() {
        let mut devices = DevicesArgs {
            target: target(),
            limit: 5,
            sort: "count".into(),
            device: None,
        };
        assert_eq!(
            devices_url(&devices),
            "http://h:8000/api/v1/devices?limit=5&sort=count"
        );
        devices.device = Some("d-1".into());
        assert_eq!(
            devices_url(&devices),
            "http://h:8000/api/v1/devices?limit=5&sort=count&deviceId=d-1"
        );
        let recent = RecentArgs {
            target: target(),
            device: "d-1".into(),
            limit: None,
        };
        assert_eq!(
            recent_url(&recent),
            "http://h:8000/api/v1/devices/d-1/recent"
        );
        let board = LeaderboardArgs {
            target: target(),
            name: "top".into(),
            top: 3,
            bucket: Some(60),
        };
        assert_eq!(
            leaderboard_url(&board),
            "http://h:8000/api/v1/leaderboards/top?topN=3&bucket=60"
        );
    }

    #[test]
    fn error_answers_print_the_apis_message_or_else_the_body() {
        let api = r#"{"error":{"code":"not_found","message":"no window 'x'"}}"#;
        assert_eq!(error_message(api.into()), "no window 'x'");
        assert_eq!(error_message("bad gateway".into()), "bad gateway");
    }
}
