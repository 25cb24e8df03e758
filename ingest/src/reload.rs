//! Hot reload of the aggregation config file.
//!
//! The file is re-read every `--config-poll-ms` (a mounted ConfigMap changes
//! by a symlink swap, which inotify watchers often miss; a small read per
//! second is cheap and always right). A new valid config is published on a
//! watch channel; each flush takes one snapshot when it is planned, so every
//! event is aggregated under exactly one config — nothing in flight is lost or
//! counted twice across a change. An invalid file is logged and ignored.

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
    mut last: Option<String>,
    tx: watch::Sender<Arc<Settings>>,
    interval: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read aggregation config; keeping the current one");
                continue;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        match AggregationConfig::from_yaml(&text).and_then(Settings::new) {
            Ok(settings) => {
                tracing::info!(path = %path.display(), windows = settings.config.windows.len(),
                    leaderboards = settings.config.leaderboards.len(), "aggregation config reloaded");
                tx.send_replace(Arc::new(settings));
                metrics.config_reloads.with_label_values(&["ok"]).inc();
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "invalid aggregation config; keeping the current one");
                metrics.config_reloads.with_label_values(&["invalid"]).inc();
            }
        }
        last = Some(text);
    }
}
