//! The crate's error type, and where it becomes a gRPC status or HTTP answer.

use std::time::Duration;

use axum::http::StatusCode;

/// Everything an ingest call or the server itself can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The whole call is unusable (empty batch, too many packets, bad JSON).
    #[error("{0}")]
    InvalidArgument(String),

    /// One event broke a rule (or, sent alone over HTTP, could not be read
    /// as an event at all); field and rule are in the message.
    #[error("{0}")]
    InvalidEvent(crate::validate::Rejection),

    /// A request body or gRPC message larger than the server takes: not
    /// read, so nothing of it was stored. `field` is what was too large
    /// (`body`, `message`), `flag` the setting that sets the limit.
    #[error("{field}: larger than the limit of {limit} bytes ({flag})")]
    TooLarge {
        field: &'static str,
        limit: usize,
        flag: &'static str,
    },

    /// A gRPC client stream sent nothing for longer than the server waits;
    /// the server ended it after settling what it had sent.
    #[error("stream idle: no message for {timeout:?} (--grpc-stream-idle-timeout-seconds)")]
    StreamIdle { timeout: Duration },

    /// The queue stayed full for longer than the caller may wait.
    #[error("ingest queue is full ({capacity} events); retry after {retry_after:?}")]
    QueueFull {
        capacity: usize,
        retry_after: Duration,
    },

    /// Redis is unreachable or a flush did not complete in time; nothing of
    /// the affected events was acknowledged. Transient: Redis comes back.
    #[error("redis unavailable: {0}")]
    Unavailable(String),

    /// Redis answered, but not as this server's flush script answers (a
    /// reply it cannot parse, or one naming events it did not send).
    /// Not transient: the reply is not lost on the way — a retry of the same
    /// flush reads the same stored result back, and a new one runs the same
    /// script — so the flush is not retried, Redis is not marked down, and
    /// the call fails with INTERNAL / 500 (its events are not acknowledged).
    /// It means a bug, or another program writing the pipeline's keys.
    #[error("unexpected reply from redis: {0}")]
    UnexpectedReply(String),

    /// No known API key (missing, malformed or unknown): 401 /
    /// UNAUTHENTICATED. The message says the rule, never the key.
    #[error("{0}")]
    Unauthenticated(String),

    /// A known API key without the scope the call needs: 403 /
    /// PERMISSION_DENIED.
    #[error("{0}")]
    Forbidden(String),

    /// The API key file breaks a rule; the message names the entry and
    /// the rule.
    #[error("invalid API key file: {0}")]
    ApiKeys(String),

    /// The server is draining for shutdown and takes no new work.
    #[error("server is shutting down; retry on another instance")]
    ShuttingDown,

    /// A query named a window or leaderboard that is not configured.
    #[error("{kind} '{name}' is not configured; configured: [{}]", known.join(", "))]
    NotFound {
        kind: &'static str,
        name: String,
        known: Vec<String>,
    },

    /// A Redis command failed in a way that is not a lost connection.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),

    /// The aggregation config file is invalid.
    #[error(transparent)]
    Config(#[from] telemetry_config::Error),

    /// A startup setting cannot be used as given; the message names the
    /// flag (e.g. an unreadable `--redis-ca-file`).
    #[error("{0}")]
    Setting(String),

    /// A listener could not be bound or a server failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The gRPC reflection service could not be built from the descriptors
    /// compiled into the binary: a startup failure (a broken build), never
    /// an answer to a call.
    #[error("grpc reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::InvalidEvent(r) if r.is_unreadable() => StatusCode::BAD_REQUEST,
            Error::InvalidEvent(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::StreamIdle { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Redis(e) if is_connection_error(e) => StatusCode::SERVICE_UNAVAILABLE,
            Error::UnexpectedReply(_) | Error::Reflection(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code this error is answered with.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidArgument(_) | Error::InvalidEvent(_) => Code::InvalidArgument,
            // Not RESOURCE_EXHAUSTED, which clients retry (a full queue):
            // the same message is as large the next time. Tonic answers
            // an oversized unary request with OUT_OF_RANGE too.
            Error::TooLarge { .. } => Code::OutOfRange,
            Error::StreamIdle { .. } => Code::DeadlineExceeded,
            Error::QueueFull { .. } => Code::ResourceExhausted,
            Error::Unavailable(_) | Error::ShuttingDown => Code::Unavailable,
            Error::NotFound { .. } => Code::NotFound,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Forbidden(_) => Code::PermissionDenied,
            Error::Redis(e) if is_connection_error(e) => Code::Unavailable,
            Error::UnexpectedReply(_) | Error::Reflection(_) => Code::Internal,
            _ => Code::Internal,
        }
    }

    /// Whether the same call may succeed when tried again later, unchanged:
    /// Redis out of reach, a full queue, a draining server. A flush is
    /// retried only on these.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::QueueFull { .. } | Error::Unavailable(_) | Error::ShuttingDown => true,
            Error::Redis(e) => is_connection_error(e),
            _ => false,
        }
    }

    /// A failed flush as told to each handler waiting on it (`Error` is not
    /// `Clone`): an unexpected reply as itself; anything else as
    /// [`Error::Unavailable`] — the events are not stored, and a later call
    /// may store them.
    pub fn for_waiter(&self) -> Error {
        match self {
            Error::UnexpectedReply(m) => Error::UnexpectedReply(m.clone()),
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            other => Error::Unavailable(other.to_string()),
        }
    }

    /// Seconds a client should wait before retrying, when retrying helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::QueueFull { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            Error::Unavailable(_) | Error::ShuttingDown => Some(1),
            _ => None,
        }
    }

    /// A short machine-readable code for JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::InvalidEvent(r) if r.is_unreadable() => "invalid_argument",
            Error::InvalidEvent(_) => "invalid_event",
            Error::TooLarge { .. } => "too_large",
            Error::StreamIdle { .. } => "stream_idle",
            Error::QueueFull { .. } => "queue_full",
            Error::Unavailable(_) => "unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::NotFound { .. } => "not_found",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            _ => "internal",
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let code = err.grpc_code();
        if code == tonic::Code::Internal {
            tracing::error!(error = %err, "internal error");
        }
        tonic::Status::new(code, err.to_string())
    }
}

/// Whether a Redis error means "could not reach Redis" rather than "Redis
/// refused the command".
pub fn is_connection_error(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        // Redis Cluster: a slot moving or being migrated, a shard without a
        // reachable primary, a replica not yet promoted.
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::MasterDown | ServerErrorKind::ReadOnly)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn redis_down() -> redis::RedisError {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into()
    }

    fn redis_refused_command() -> redis::RedisError {
        (redis::ErrorKind::UnexpectedReturnType, "not a string").into()
    }

    fn reflection_failure() -> Error {
        tonic_reflection::server::Error::InvalidFileDescriptorSet("broken".into()).into()
    }

    fn rejection(json: &str) -> Error {
        let limits = crate::limits::Limits::default();
        let now = 1_700_000_000_000;
        Error::InvalidEvent(
            crate::validate::validate_json(json.as_bytes(), &limits, now).unwrap_err(),
        )
    }

    /// (error, HTTP status, gRPC code, transient, Retry-After)
    fn cases() -> Vec<(Error, StatusCode, Code, bool, Option<u64>)> {
        vec![
            (
                rejection(r#"{"deviceId":"a b","timestamp":1700000000000}"#),
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::InvalidArgument,
                false,
                None,
            ),
            (
                rejection(r#"{"deviceId":"#),
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                false,
                None,
            ),
            (
                Error::InvalidArgument("packets: empty".into()),
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                false,
                None,
            ),
            (
                Error::TooLarge {
                    field: "body",
                    limit: 1024,
                    flag: "--http-max-body-bytes",
                },
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::OutOfRange,
                false,
                None,
            ),
            (
                Error::StreamIdle {
                    timeout: Duration::from_secs(60),
                },
                StatusCode::REQUEST_TIMEOUT,
                Code::DeadlineExceeded,
                false,
                None,
            ),
            (
                Error::QueueFull {
                    capacity: 10,
                    retry_after: Duration::from_millis(300),
                },
                StatusCode::TOO_MANY_REQUESTS,
                Code::ResourceExhausted,
                true,
                Some(1),
            ),
            (
                Error::Unavailable("redis is unreachable".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                true,
                Some(1),
            ),
            (
                Error::ShuttingDown,
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                true,
                Some(1),
            ),
            (
                Error::Redis(redis_down()),
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                true,
                None,
            ),
            (
                Error::Redis(redis_refused_command()),
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                false,
                None,
            ),
            (
                Error::UnexpectedReply("flush script answered \"ok:x\"".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                false,
                None,
            ),
            (
                reflection_failure(),
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                false,
                None,
            ),
        ]
    }

    #[test]
    fn each_error_maps_to_its_http_status_grpc_code_and_retry_advice() {
        for (err, status, code, transient, retry_after) in cases() {
            assert_eq!(err.http_status(), status, "{err:?}");
            assert_eq!(err.grpc_code(), code, "{err:?}");
            assert_eq!(err.is_transient(), transient, "{err:?}");
            assert_eq!(err.retry_after(), retry_after, "{err:?}");
            let message = err.to_string();
            let grpc = tonic::Status::from(err);
            assert_eq!((grpc.code(), grpc.message()), (code, message.as_str()));
        }
    }

    #[test]
    fn a_single_event_that_is_not_json_is_a_bad_request_not_an_invalid_event() {
        assert_eq!(rejection("{").code(), "invalid_argument");
        assert_eq!(rejection(r#"{"timestamp":1}"#).code(), "invalid_event");
    }

    #[test]
    fn unexpected_reply_and_reflection_failure_do_not_read_as_redis_unavailable() {
        let reply = Error::UnexpectedReply("flush script answered \"garbage\"".into());
        assert_eq!(
            reply.to_string(),
            "unexpected reply from redis: flush script answered \"garbage\""
        );
        assert_eq!(reply.code(), "internal");
        let reflection = reflection_failure();
        assert!(
            reflection
                .to_string()
                .starts_with("grpc reflection service: "),
            "{reflection}"
        );
        assert_eq!(reflection.code(), "internal");
    }

    #[test]
    fn a_failed_flush_reaches_its_waiters_as_what_it_was() {
        let reply = Error::UnexpectedReply("x".into()).for_waiter();
        assert!(matches!(&reply, Error::UnexpectedReply(m) if m == "x"));
        let timeout = Error::Unavailable("flush took longer than 1s".into()).for_waiter();
        assert_eq!(
            timeout.to_string(),
            "redis unavailable: flush took longer than 1s",
            "not wrapped twice"
        );
        let lost = Error::Redis(redis_down()).for_waiter();
        assert!(matches!(lost, Error::Unavailable(_)), "{lost:?}");
        assert_eq!(lost.http_status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
