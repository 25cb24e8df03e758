//! Hot reload of the aggregation config file.
//!
//! The file is re-read every `--config-poll-ms` (a mounted ConfigMap changes
//! by a symlink swap, which inotify watchers often miss; a small read per
//! second is cheap and always right). A new valid config is published on a
//! watch channel; each flush takes one snapshot when it is planned, so every
//! event is aggregated under exactly one config — nothing in flight is lost or
//! counted twice across a change. An invalid file is logged and ignored.
//! [`poll_file`] is the loop itself; the API key file is watched by it too
//! ([`crate::auth`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use telemetry_config::AggregationConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::aggregate::Settings;
use crate::metrics::Metrics;

/// Loads the config at start-up: a missing or invalid file is fatal here.
pub fn load(path: Option<&PathBuf>) -> Result<(Settings, Option<String>)> {
    match path {
        None => Ok((Settings::default(), None)),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|source| telemetry_config::Error::Read {
                    path: p.display().to_string(),
                    source,
                })?;
            let settings = Settings::new(AggregationConfig::from_yaml(&text)?)?;
            Ok((settings, Some(text)))
        }
    }
}

/// Watches the file until `shutdown`, publishing every valid change.
pub async fn watch_file(
    path: PathBuf,
    last: Option<String>,
    tx: watch::Sender<Arc<Settings>>,
    interval: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let shown = path.display().to_string();
    poll_file(path, last, interval, shutdown, |text| {
        match AggregationConfig::from_yaml(text).and_then(Settings::new) {
            Ok(settings) => {
                tracing::info!(path = %shown, windows = settings.config.windows.len(),
                    leaderboards = settings.config.leaderboards.len(), "aggregation config reloaded");
                tx.send_replace(Arc::new(settings));
                metrics.config_reloads.with_label_values(&["ok"]).inc();
            }
            Err(e) => {
                tracing::error!(path = %shown, error = %e, "invalid aggregation config; keeping the current one");
                metrics.config_reloads.with_label_values(&["invalid"]).inc();
            }
        }
    })
    .await;
}

/// Reads `path` every `interval` until `shutdown` and hands each new
/// content (one that differs from `last`) to `apply`, which keeps what is
/// in force when the content is invalid. An unreadable file is logged and
/// skipped. Used for the aggregation config and the API key file.
pub async fn poll_file(
    path: PathBuf,
    mut last: Option<String>,
    interval: Duration,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&str),
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a watched file; keeping what is in force");
                continue;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        apply(&text);
        last = Some(text);
    }
}
