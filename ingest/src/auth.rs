//! API keys: who may send events and who may query (off unless
//! `--api-keys-file` is given).
//!
//! ```text
//! keys.yaml ─► keyfile (parse, check: pure) ─► watch channel of Arc<KeySet>
//!                 ▲ reload::poll_file                 │ one snapshot per call
//!                 └──── every --config-poll-ms        ▼
//! call ─► grpc::Guard (interceptor) / http::require (middleware)
//!          └► check::authorize(keys, authorization, scope) ─► Caller | 401/403
//! ```
//!
//! - [`keyfile`]: the file's format and rules, the constant-time lookup.
//! - [`check`]: the decision on one call, and the message of a refusal.
//! - [`grpc`], [`http`]: where the transports ask; which route needs what.
//! - [`metrics`]: per-key counters (by key name, never the key).
//!
//! A call is checked once, when it starts: a reload (a key removed or
//! added) applies to calls started after it, and an open stream keeps
//! running under the key it was opened with. An invalid file on reload is
//! logged and counted and the keys in force stay.

pub mod check;
pub mod grpc;
pub mod http;
pub mod keyfile;
pub mod metrics;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::intake::{Partial, Tally};
use crate::{Error, Result, reload};
pub use check::Denied;
pub use keyfile::{KeySet, Scope};
pub use metrics::AuthMetrics;

/// The keys in force and the counters of their use; cloned into each
/// transport.
#[derive(Clone, Debug)]
pub struct Auth {
    keys: watch::Receiver<Arc<KeySet>>,
    metrics: AuthMetrics,
}

/// The key a call was let in with: its name, and its event counter.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key: Arc<str>,
    events: IntCounter,
}

/// The auth of a running server: [`Auth`] for the transports and the
/// sender side for the file watcher.
#[derive(Debug)]
pub struct KeyStore {
    pub auth: Auth,
    tx: watch::Sender<Arc<KeySet>>,
    path: PathBuf,
    text: String,
}

impl KeyStore {
    /// Loads the file at start-up: a missing or invalid file is fatal here.
    pub fn load(path: &Path, metrics: AuthMetrics) -> Result<KeyStore> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("--api-keys-file: cannot read {}", path.display()),
            source,
        })?;
        let keys = KeySet::from_yaml(&text).map_err(|e| in_file(path, e))?;
        tracing::info!(path = %path.display(), keys = keys.len(), names = ?keys.names().collect::<Vec<_>>(),
            "API keys loaded; calls without a key are refused");
        metrics.loaded.set(keys.len() as i64);
        let (tx, rx) = watch::channel(Arc::new(keys));
        Ok(KeyStore {
            auth: Auth { keys: rx, metrics },
            tx,
            path: path.to_path_buf(),
            text,
        })
    }

    /// Re-reads the file every `interval` until `shutdown`; a valid change
    /// replaces the keys for calls that start after it.
    pub fn watch(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        let metrics = self.auth.metrics.clone();
        let path = self.path.clone();
        let last = Some(self.text.clone());
        async move {
            let shown = path.display().to_string();
            reload::poll_file(path, last, interval, shutdown, |text| {
                apply(&tx, &metrics, &shown, text)
            })
            .await;
        }
    }
}

/// One new version of the file: its keys in force, or the old ones kept.
fn apply(tx: &watch::Sender<Arc<KeySet>>, metrics: &AuthMetrics, path: &str, text: &str) {
    match KeySet::from_yaml(text) {
        Ok(keys) => {
            tracing::info!(path, keys = keys.len(), names = ?keys.names().collect::<Vec<_>>(), "API keys reloaded");
            metrics.loaded.set(keys.len() as i64);
            metrics.reloads.with_label_values(&["ok"]).inc();
            tx.send_replace(Arc::new(keys));
        }
        Err(e) => {
            tracing::error!(path, error = %e, "invalid API key file; keeping the keys in force");
            metrics.reloads.with_label_values(&["invalid"]).inc();
        }
    }
}

fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::ApiKeys(m) => Error::ApiKeys(format!("--api-keys-file {}: {m}", path.display())),
        other => other,
    }
}

impl Auth {
    /// Lets a call in with its key, or refuses it (counted either way).
    pub fn check(&self, authorization: Option<&[u8]>, needs: Scope) -> Result<Caller> {
        let keys = self.keys.borrow().clone();
        match check::authorize(&keys, authorization, needs) {
            Ok(key) => {
                self.metrics.allowed(&key.name);
                Ok(Caller {
                    key: key.name.clone(),
                    events: self.metrics.events.with_label_values(&[&*key.name]),
                })
            }
            Err(denied) => {
                self.metrics.denied(&denied);
                tracing::debug!(needs = %needs, reason = ?denied, "call refused");
                Err(if denied.is_forbidden() {
                    Error::Forbidden(denied.message())
                } else {
                    Error::Unauthenticated(denied.message())
                })
            }
        }
    }
}

/// Counts the events a call stored under its key (also those a call that
/// ended early settled as stored).
pub fn count_stored(caller: Option<&Caller>, finished: &std::result::Result<Tally, Box<Partial>>) {
    let Some(caller) = caller else { return };
    let accepted = match finished {
        Ok(t) => t.accepted,
        Err(p) => p.tally.accepted,
    };
    caller.events.inc_by(accepted);
}
