//! A call over HTTP: one `POST /api/v1/events/batch` of JSON events,
//! answered by an `AckJson` (200, or 422 when every event was rejected).
//!
//! The generator's events are already JSON objects, so the body is only
//! their concatenation inside `[` `]`.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use telemetry_proto::json::AckJson;

use super::Failure;
use crate::credential::ApiKey;
use crate::send::report::Tally;
use crate::{Error, Result};

/// An HTTP client for one base URL.
#[derive(Clone)]
pub struct Client {
    client: reqwest::Client,
    /// The batch endpoint under the base URL.
    url: String,
    /// `authorization` header of each call (`--api-key`).
    authorization: Option<String>,
}

impl Client {
    pub fn new(base: &str, key: Option<&ApiKey>) -> Self {
        Client {
            authorization: key.map(ApiKey::bearer),
            client: reqwest::Client::new(),
            url: format!("{}/api/v1/events/batch", base.trim_end_matches('/')),
        }
    }

    /// A client for `base`; for an `https://` one, verifying the server
    /// against `ca` (or the system store), and checked at once with a
    /// `GET /healthz` so an untrusted certificate is an error here (a
    /// server not up yet is left to the calls' retries).
    pub async fn connect(base: &str, ca: Option<&Path>, key: Option<&ApiKey>) -> Result<Self> {
        if !crate::tls::is_https(base) {
            return Ok(Client::new(base, key));
        }
        let client = crate::tls::http_client(ca)?;
        let healthz = format!("{}/healthz", base.trim_end_matches('/'));
        if let Err(error) = client.get(&healthz).send().await
            && let Some(detail) = crate::tls::untrusted(&error)
        {
            return Err(Error::Untrusted {
                url: base.to_string(),
                detail,
            });
        }
        Ok(Client {
            client,
            url: format!("{}/api/v1/events/batch", base.trim_end_matches('/')),
            authorization: key.map(ApiKey::bearer),
        })
    }

    /// One attempt: the whole call's tally, or how far it got.
    pub async fn send(&self, events: &[Bytes]) -> Result<Tally, Failure> {
        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json");
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let response = request
            .body(json_array(events))
            .send()
            .await
            .map_err(|e| match crate::tls::untrusted(&e) {
                Some(detail) => Failure::Fatal {
                    message: format!("the server's certificate is not trusted ({detail}); give the CA that signed it with --ca"),
                },
                None => Failure::Retryable {
                    settled: Tally::default(),
                    message: e.to_string(),
                },
            })?;
        let status = response.status();
        let settled = settled(response.headers());
        let body = response.text().await.unwrap_or_default();
        answer(status, settled, &body, events.len())
    }
}

/// The events as one JSON array.
fn json_array(events: &[Bytes]) -> Bytes {
    let len: usize = events.iter().map(|e| e.len() + 1).sum();
    let mut body = BytesMut::with_capacity(len + 2);
    body.put_u8(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(e);
    }
    body.put_u8(b']');
    body.freeze()
}

/// How far a failed call got, from the server's `telemetry-*` headers.
fn settled(headers: &HeaderMap) -> Tally {
    let count = |key: &str| {
        headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Tally {
        accepted: count("telemetry-accepted"),
        rejected: count("telemetry-rejected"),
        duplicates: count("telemetry-duplicates"),
        settled: count("telemetry-settled"),
    }
}

/// The answer to a call of `sent` events: its ack, or a failure that is
/// retryable when the server was full (429) or unavailable (503).
fn answer(status: StatusCode, settled: Tally, body: &str, sent: usize) -> Result<Tally, Failure> {
    if status.is_success() || status == StatusCode::UNPROCESSABLE_ENTITY {
        let ack: AckJson = serde_json::from_str(body).map_err(|e| Failure::Fatal {
            message: e.to_string(),
        })?;
        return Ok(Tally {
            accepted: ack.accepted,
            rejected: ack.rejected,
            duplicates: ack.duplicates,
            settled: sent as u64,
        });
    }
    let message = format!("{status}: {body}");
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            Err(Failure::Retryable { settled, message })
        }
        _ => Err(Failure::Fatal { message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_sent_as_one_json_array() {
        let events = [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")];
        assert_eq!(&json_array(&events)[..], b"[{\"a\":1},{}]");
        assert_eq!(&json_array(&[])[..], b"[]");
    }

    #[test]
    fn an_all_rejected_batch_is_an_answer_and_a_full_server_a_retryable_failure() {
        let ack =
            r#"{"accepted":0,"rejected":3,"duplicates":0,"rejectedByReason":{},"rejections":[]}"#;
        let t = answer(StatusCode::UNPROCESSABLE_ENTITY, Tally::default(), ack, 3).unwrap();
        assert_eq!((t.rejected, t.settled), (3, 3));

        let mut headers = HeaderMap::new();
        headers.insert("telemetry-settled", "0".parse().unwrap());
        headers.insert("retry-after", "1".parse().unwrap());
        let failed = answer(StatusCode::TOO_MANY_REQUESTS, settled(&headers), "full", 3);
        assert_eq!(
            failed,
            Err(Failure::Retryable {
                settled: Tally::default(),
                message: "429 Too Many Requests: full".into()
            })
        );
        assert!(matches!(
            answer(StatusCode::BAD_REQUEST, Tally::default(), "no", 3),
            Err(Failure::Fatal { .. })
        ));
    }

    #[test]
    fn a_call_that_ends_early_counts_what_the_headers_say_it_settled() {
        let mut headers = HeaderMap::new();
        for (key, value) in [
            ("telemetry-accepted", "5"),
            ("telemetry-rejected", "2"),
            ("telemetry-duplicates", "1"),
            ("telemetry-settled", "8"),
        ] {
            headers.insert(key, value.parse().unwrap());
        }
        let t = settled(&headers);
        assert_eq!(
            (t.accepted, t.rejected, t.duplicates, t.settled),
            (5, 2, 1, 8),
            "the same values gRPC sends as trailers"
        );
    }
}
