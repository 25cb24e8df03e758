//! One call of a worker, over gRPC or HTTP, and its retries.
//!
//! A call that fails part-way is resumed from the point the server says it
//! settled (`telemetry-settled`): the events before it have their final
//! answer, the rest are sent again. Their ids make a resent event that was
//! stored after all count as a duplicate, never twice.

pub mod grpc;
pub mod http;

use std::time::Duration;

use bytes::Bytes;

use super::generator::Form;
use super::report::{Outcome, Tally};
use crate::cli::SendArgs;
use crate::{Error, Result};

/// The first pause before a retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One worker's connection.
#[derive(Clone)]
pub enum Transport {
    Grpc(grpc::Client),
    Http(http::Client),
}

/// An attempt that did not get its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Resending the events past `settled.settled` may succeed; the counts of
    /// `settled` are final.
    Retryable { settled: Tally, message: String },
    /// Resending cannot help.
    Fatal { message: String },
}

impl Transport {
    /// Connects to the endpoint `--grpc` or `--http` names.
    pub async fn connect(args: &SendArgs) -> Result<Self> {
        match (&args.grpc, &args.http) {
            (Some(url), _) => Ok(Transport::Grpc(
                grpc::Client::connect(
                    url,
                    args.grpc_mode,
                    args.ca.as_deref(),
                    args.api_key.as_ref(),
                )
                .await?,
            )),
            (None, Some(url)) => Ok(Transport::Http(
                http::Client::connect(url, args.ca.as_deref(), args.api_key.as_ref()).await?,
            )),
            (None, None) => Err(Error::InvalidFlag("give --grpc or --http".into())),
        }
    }

    /// The form the events of this transport take.
    pub fn form(&self) -> Form {
        match self {
            Transport::Grpc(..) => Form::Protobuf,
            Transport::Http(..) => Form::Json,
        }
    }

    /// One attempt at sending `events` in one call.
    async fn send(&mut self, events: &[Bytes]) -> Result<Tally, Failure> {
        match self {
            Transport::Grpc(c) => c.send(events).await,
            Transport::Http(c) => c.send(events).await,
        }
    }

    /// Sends a call, resuming from the settled point after retryable
    /// failures, at most `retries` times.
    pub async fn deliver(&mut self, events: &[Bytes], retries: u32) -> Outcome {
        let mut tally = Tally::default();
        let mut offset = 0usize;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let failure = loop {
            match self.send(&events[offset..]).await {
                Ok(answer) => {
                    tally.add(&answer);
                    offset = events.len();
                    break None;
                }
                Err(Failure::Retryable {
                    mut settled,
                    message,
                }) => {
                    // What the failed attempt did settle is acknowledged all
                    // the same.
                    settled.rejected = settled.rejected.min(settled.settled);
                    tally.add(&settled);
                    offset = (offset + settled.settled as usize).min(events.len());
                    if attempt >= retries {
                        break Some(message);
                    }
                    tracing::debug!(%message, offset, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                Err(Failure::Fatal { message }) => break Some(message),
            }
        };
        if let Some(message) = failure {
            eprintln!("call failed: {message}");
        }
        Outcome {
            tally,
            retries: u64::from(attempt),
            unacknowledged: (events.len() - offset) as u64,
        }
    }
}
