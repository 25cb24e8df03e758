//! What can fail in `telemetryctl`. `main` prints the error with its causes
//! and exits 1.
//!
//! A call of `send` that still fails after its retries is not an error: it
//! is counted in the summary (`failed`) and makes the exit code 1.

use tonic::codegen::http::uri::InvalidUri;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag whose value cannot be used (the message names the flag).
    #[error("{0}")]
    InvalidFlag(String),
    #[error("--grpc: not a URL: {url}")]
    GrpcUrl {
        url: String,
        #[source]
        source: InvalidUri,
    },
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// An https:// server's certificate did not verify against `--ca` (or
    /// the system store).
    #[error(
        "{url}: the server's certificate is not trusted ({detail}); give the CA that signed it with --ca (TELEMETRY_CA_FILE)"
    )]
    Untrusted { url: String, detail: String },
    #[error("a sender task failed")]
    Worker(#[source] tokio::task::JoinError),
    /// A query's request got no answer. The cause is part of the message.
    #[error("GET {url}: {cause}")]
    Request { url: String, cause: reqwest::Error },
    /// A query's answer could not be read to its end.
    #[error(transparent)]
    ReadAnswer(reqwest::Error),
    /// The server refused a query; `message` is the API's error message.
    #[error("{status}: {message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("unexpected answer from {url}: {cause}")]
    Answer {
        url: String,
        cause: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
