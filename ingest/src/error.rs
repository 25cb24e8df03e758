//! The crate's error type, and where it becomes a gRPC status or HTTP answer.

use std::time::Duration;

use axum::http::StatusCode;

/// Everything an ingest call or the server itself can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The whole call is unusable (empty batch, too many packets, bad JSON).
    #[error("{0}")]
    InvalidArgument(String),

    /// One event broke a rule; field and rule are in the message.
    #[error("{0}")]
    InvalidEvent(crate::validate::Rejection),

    /// The queue stayed full for longer than the caller may wait.
    #[error("ingest queue is full ({capacity} events); retry after {retry_after:?}")]
    QueueFull {
        capacity: usize,
        retry_after: Duration,
    },

    /// Redis is unreachable or a flush did not complete in time; nothing of
    /// the affected events was acknowledged.
    #[error("redis unavailable: {0}")]
    Unavailable(String),

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::InvalidEvent(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Redis(e) if is_connection_error(e) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
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
            Error::InvalidEvent(_) => "invalid_event",
            Error::QueueFull { .. } => "queue_full",
            Error::Unavailable(_) => "unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::NotFound { .. } => "not_found",
            _ => "internal",
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Code;
        let code = match &err {
            Error::InvalidArgument(_) | Error::InvalidEvent(_) => Code::InvalidArgument,
            Error::QueueFull { .. } => Code::ResourceExhausted,
            Error::Unavailable(_) | Error::ShuttingDown => Code::Unavailable,
            Error::NotFound { .. } => Code::NotFound,
            Error::Redis(e) if is_connection_error(e) => Code::Unavailable,
            _ => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %err, "internal error");
        }
        tonic::Status::new(code, err.to_string())
    }
}

/// Whether a Redis error means "could not reach Redis" rather than "Redis
/// refused the command".
pub fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}
