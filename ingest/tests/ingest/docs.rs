//! The API documents itself: every operation of `/api/v1/openapi.json` is
//! answered by the server with a status the document lists, and the page at
//! `/docs` renders every route in a real browser (headless Chromium).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Ingest, Redis, pipeline};

/// A server on a pipeline of its own (and the Redis it writes to), with the
/// document it serves.
async fn serve(test: &str) -> (Redis, Ingest, Value) {
    let redis = Redis::start();
    let ingest = Ingest::start(&redis.url(), &pipeline(test), &[]).await;
    let doc = reqwest::get(format!("{}/api/v1/openapi.json", ingest.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (redis, ingest, doc)
}

/// (method, path) of every documented operation.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            out.push((method.clone(), path.clone()));
        }
    }
    out
}

/// A documented path with each `{parameter}` filled in by `x`.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closed parameter") + open;
        out.push_str(&rest[..open]);
        out.push('x');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn every_documented_operation_is_answered_with_a_documented_status() {
    let (_redis, ingest, doc) = serve("documented").await;
    let operations = operations(&doc);
    assert!(operations.len() >= 13, "{operations:?}");
    let event = json!({"deviceId": "doc-1", "timestamp": 1_700_000_000_000i64});
    let client = reqwest::Client::new();
    for (method, path) in &operations {
        let url = format!("{}{}", ingest.http_url(), concrete(path));
        let request = match method.as_str() {
            "get" => client.get(&url),
            "post" if path.ends_with("/batch") => client.post(&url).json(&json!([event])),
            "post" => client.post(&url).json(&event),
            other => panic!("{other} {path}: no request written for this method"),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        // A path the router lacks is a 404 with an empty body, a method it
        // lacks a 405; the API's own 404 names what it did not find.
        assert_ne!(status, 405, "{method} {path}: not routed");
        if status == 404 {
            let error: Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("{method} {path}: not routed"));
            assert_eq!(error["error"]["code"], "not_found", "{method} {path}");
        }
        let responses = &doc["paths"][path][method]["responses"];
        assert!(
            responses.get(status.as_str()).is_some(),
            "{method} {path}: {status} is not among the documented {responses}"
        );
    }
    ingest.stop().await;
}

/// Debian's Chromium, which scripts/setup installs.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromium"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: run scripts/setup, which installs Debian's chromium \
             for the browser test of the /docs page"
        )
    })
}

/// Runs headless Chromium with a fresh profile on `args` and returns its
/// standard output. The browser runs in a process group of its own, killed
/// by its id when the run takes too long, so no renderer outlives the test.
async fn headless(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().expect("chromium starts");
    let pid = child.id().expect("chromium has a pid");
    match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
        Ok(output) => {
            let output = output.unwrap();
            assert!(
                output.status.success(),
                "chromium {args:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        }
        Err(_) => {
            // The group's id is the browser's pid.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("chromium {args:?} did not finish within 60 s");
        }
    }
}

#[tokio::test]
async fn docs_page_renders_every_route_in_a_browser() {
    let (_redis, ingest, doc) = serve("docs-page").await;

    // `/docs` leads to the page at `/docs/`.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(format!("{}/docs", ingest.http_url()))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    assert_eq!(response.headers()["location"], "/docs/");

    let page = format!("{}/docs/", ingest.http_url());
    let dom = headless(&["--virtual-time-budget=10000", "--dump-dom", &page]).await;
    // Swagger UI writes each operation's path into `data-path` once the
    // script has fetched the document and rendered it.
    for (method, path) in operations(&doc) {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{method} {path} is not on the rendered page:\n{dom}"
        );
    }

    // A picture of the page, for people.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory");
    let shot = target.join("docs-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(&[
        "--virtual-time-budget=10000",
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,2000",
        &page,
    ])
    .await;
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(size > 0, "no screenshot at {}", shot.display());
    ingest.stop().await;
}
