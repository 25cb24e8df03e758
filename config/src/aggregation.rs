//! The aggregation settings and their defaults.
//!
//! Field names are camelCase in YAML and JSON, the same in the ingest
//! `--config` file and in `TelemetryPipeline.spec.aggregation`. Every field has
//! a default, so an empty document is a valid config (per-device and
//! per-event-type counters, dedup for 24 h, the last 20 events per device).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Names of windows and leaderboards: they appear in Redis keys and URLs.
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Longest window or leaderboard name.
pub const NAME_MAX_LEN: usize = 63;
/// Most events kept per device in the recent-events list.
pub const RECENT_EVENTS_MAX: u32 = 1000;
/// Most windows, and separately most leaderboards, in one pipeline.
pub const MAX_NAMED_AGGREGATES: usize = 32;
/// Longest retention of a window or a leaderboard bucket (90 days).
pub const RETENTION_MAX_SECONDS: u32 = 90 * 24 * 3600;
/// Longest dedup TTL (30 days).
pub const DEDUP_TTL_MAX_SECONDS: u32 = 30 * 24 * 3600;

/// What each ingest pod aggregates into Redis. Applied atomically with the
/// event's acknowledgement: an event counts in every aggregate or in none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AggregationConfig {
    /// Lifetime counters per device and per event type, and which events to
    /// drop before anything is counted.
    pub counters: CounterConfig,
    /// Duplicate suppression by `eventId`, decided in Redis so that it holds
    /// across all ingest pods of the pipeline.
    pub dedup: DedupConfig,
    /// The last events of each device, kept for the recent-events query.
    pub recent_events: RecentEventsConfig,
    /// Named per-minute (and optionally per-hour) windows: count, sum, min
    /// and max of `value` for one event type or for all events.
    #[schemars(length(max = MAX_NAMED_AGGREGATES), extend("x-kubernetes-validations" = [
        {"rule": "self.all(w, self.exists_one(x, x.name == w.name))", "message": "aggregation.windows: names must be unique"}
    ]))]
    pub windows: Vec<WindowConfig>,
    /// Named Top-N leaderboards: members ranked by event count or by the sum
    /// of `value`, in hourly or daily buckets.
    #[schemars(length(max = MAX_NAMED_AGGREGATES), extend("x-kubernetes-validations" = [
        {"rule": "self.all(l, self.exists_one(x, x.name == l.name))", "message": "aggregation.leaderboards: names must be unique"}
    ]))]
    pub leaderboards: Vec<LeaderboardConfig>,
}

/// Lifetime counters and event filters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CounterConfig {
    /// Count accepted events per `deviceId` (the `devices` query).
    pub per_device: bool,
    /// Count accepted events per `eventType` (the `counter` query).
    pub per_event_type: bool,
    /// Event types that are acknowledged but not aggregated at all (counted
    /// in the `telemetry_ingest_dropped_total` metric). Exact match.
    #[schemars(inner(length(min = 1, max = 128)))]
    pub drop_event_types: Vec<String>,
    /// Device ids that are acknowledged but not aggregated at all. Glob
    /// patterns: `*` any run of characters, `?` one character, `[abc]` a set.
    #[schemars(inner(length(min = 1)))]
    pub drop_devices: Vec<String>,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self {
            per_device: true,
            per_event_type: true,
            drop_event_types: Vec::new(),
            drop_devices: Vec::new(),
        }
    }
}

/// Duplicate suppression by event id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DedupConfig {
    /// When true, an event whose `eventId` was already accepted within
    /// `ttlSeconds` is acknowledged as a duplicate and not counted again.
    /// Events without an `eventId` are never deduplicated.
    pub enabled: bool,
    /// How long an accepted `eventId` is remembered, in seconds (1..=2592000).
    #[schemars(range(min = 1, max = DEDUP_TTL_MAX_SECONDS))]
    pub ttl_seconds: u32,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_seconds: 24 * 3600,
        }
    }
}

/// Recent events per device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RecentEventsConfig {
    /// How many of each device's latest events to keep (0 turns the feature
    /// off; at most 1000). Older ones are trimmed in the same flush.
    #[schemars(range(max = RECENT_EVENTS_MAX))]
    pub per_device: u32,
    /// Seconds after a device's last event before its list expires
    /// (0 = never).
    pub ttl_seconds: u32,
}

impl Default for RecentEventsConfig {
    fn default() -> Self {
        Self {
            per_device: 20,
            ttl_seconds: 7 * 24 * 3600,
        }
    }
}

/// One named time window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowConfig {
    /// Name used in queries and Redis keys: lowercase letters, digits and
    /// '-', at most 63 characters, unique among windows.
    #[schemars(length(min = 1, max = NAME_MAX_LEN), pattern(NAME_PATTERN))]
    pub name: String,
    /// Only events of this type are aggregated; absent means every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub event_type: Option<String>,
    /// What is kept per minute: `count`, and `sum`, `min`, `max` of `value`.
    #[serde(default = "default_window_aggregates")]
    #[schemars(length(min = 1, max = 4), extend("x-kubernetes-validations" = [
        {"rule": "self.all(a, self.exists_one(b, b == a))", "message": "aggregates must not repeat an entry"}
    ]))]
    pub aggregates: Vec<WindowAggregate>,
    /// Also keep hourly buckets (queries over many hours stay cheap).
    #[serde(default)]
    pub per_hour: bool,
    /// How long each bucket is kept after its minute (or hour) ends, in
    /// seconds (60..=7776000).
    #[serde(default = "default_window_retention")]
    #[schemars(range(min = 60, max = RETENTION_MAX_SECONDS))]
    pub retention_seconds: u32,
}

fn default_window_aggregates() -> Vec<WindowAggregate> {
    vec![WindowAggregate::Count]
}

fn default_window_retention() -> u32 {
    2 * 3600
}

/// A per-bucket aggregate of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WindowAggregate {
    /// Number of events.
    Count,
    /// Sum of `value`.
    Sum,
    /// Smallest `value`.
    Min,
    /// Largest `value`.
    Max,
}

/// One named Top-N leaderboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.member) && self.member == 'attribute') == has(self.memberAttribute)",
        "message": "memberAttribute is required when member is attribute, and only allowed then"
    }
]))]
pub struct LeaderboardConfig {
    /// Name used in queries and Redis keys: lowercase letters, digits and
    /// '-', at most 63 characters, unique among leaderboards.
    #[schemars(length(min = 1, max = NAME_MAX_LEN), pattern(NAME_PATTERN))]
    pub name: String,
    /// Only events of this type count; absent means every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub event_type: Option<String>,
    /// Who is ranked: `userId`, `deviceId`, or the value of the attribute
    /// named in `memberAttribute`. Events without a member are skipped.
    #[serde(default)]
    pub member: LeaderboardMember,
    /// The attribute whose value is the member; required when `member` is
    /// `attribute`, not allowed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub member_attribute: Option<String>,
    /// How members are scored: `count` of events or `sum` of `value`.
    #[serde(default)]
    pub score: LeaderboardScore,
    /// Scores restart in each bucket: `hour` or `day` (UTC).
    #[serde(default)]
    pub bucket: LeaderboardBucket,
    /// How long a bucket is kept after it ends, in seconds (60..=7776000).
    #[serde(default = "default_leaderboard_retention")]
    #[schemars(range(min = 60, max = RETENTION_MAX_SECONDS))]
    pub retention_seconds: u32,
}

fn default_leaderboard_retention() -> u32 {
    2 * 24 * 3600
}

/// Who a leaderboard ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LeaderboardMember {
    /// The event's `userId`.
    #[default]
    UserId,
    /// The event's `deviceId`.
    DeviceId,
    /// The value of the attribute named by `memberAttribute`.
    Attribute,
}

/// How a leaderboard scores its members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LeaderboardScore {
    /// One point per event.
    #[default]
    Count,
    /// The sum of the events' `value`.
    Sum,
}

/// The period after which a leaderboard starts again from zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LeaderboardBucket {
    /// Each UTC hour.
    Hour,
    /// Each UTC day.
    #[default]
    Day,
}

impl LeaderboardBucket {
    /// Length of one bucket in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            LeaderboardBucket::Hour => 3600,
            LeaderboardBucket::Day => 86_400,
        }
    }
}

impl AggregationConfig {
    /// Parses a YAML (or JSON) document and checks it.
    pub fn from_yaml(text: &str) -> crate::Result<Self> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(text)?
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and checks a config file.
    pub fn from_file(path: &std::path::Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| crate::Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// The YAML form the operator writes into the ingest ConfigMap.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("aggregation config always serialises")
    }

    /// A window by name.
    pub fn window(&self, name: &str) -> Option<&WindowConfig> {
        self.windows.iter().find(|w| w.name == name)
    }

    /// A leaderboard by name.
    pub fn leaderboard(&self, name: &str) -> Option<&LeaderboardConfig> {
        self.leaderboards.iter().find(|l| l.name == name)
    }
}

impl WindowConfig {
    /// Whether the window keeps this aggregate.
    pub fn keeps(&self, aggregate: WindowAggregate) -> bool {
        self.aggregates.contains(&aggregate)
    }
}
