//! The Redis key layout of one pipeline (documented in docs/redis-layout.md).
//!
//! Every key starts with `tp:{<tag>}:`, the tag being the pipeline name on a
//! single Redis, or one of its partitions' tags on Redis Cluster
//! ([`crate::partition`]). The braces are a Redis Cluster hash tag: all keys
//! of a partition hash to one slot, so a flush part — one Lua call touching
//! many keys — stays legal when Redis is sharded.

/// Length of a dedup bucket: ids are remembered per hour of the event time.
pub const DEDUP_BUCKET_SECONDS: i64 = 3600;

/// Builds the keys of one pipeline.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of a pipeline on a single Redis.
    pub fn new(pipeline: &str) -> Self {
        Keys::with_tag(pipeline)
    }

    /// The keys under hash tag `tag` (a partition's, on Redis Cluster).
    pub fn with_tag(tag: &str) -> Self {
        Keys {
            prefix: format!("tp:{{{tag}}}:"),
        }
    }

    /// The prefix shared by every key, e.g. `tp:{default}:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// ZSET device id → accepted events.
    pub fn devices(&self) -> String {
        format!("{}devices", self.prefix)
    }

    /// HASH event type → accepted events.
    pub fn types(&self) -> String {
        format!("{}types", self.prefix)
    }

    /// HASH of pipeline totals (`events`).
    pub fn stats(&self) -> String {
        format!("{}stats", self.prefix)
    }

    /// SET of event ids whose timestamps fall in the hour starting at
    /// `hour_start` (unix seconds).
    pub fn dedup(&self, hour_start: i64) -> String {
        format!("{}dedup:{hour_start}", self.prefix)
    }

    /// SET of the ids of events whose leaderboard scores this partition
    /// holds for members of its own while the events live in other
    /// partitions (Redis Cluster), by the hour of the event time.
    pub fn member_claims(&self, hour_start: i64) -> String {
        format!("{}mclaims:{hour_start}", self.prefix)
    }

    /// STRING marker of an applied flush; its value is the flush's result.
    pub fn batch(&self, batch_id: &str) -> String {
        format!("{}batch:{batch_id}", self.prefix)
    }

    /// HASH {count, sum, min, max} of one window minute (start in unix s).
    pub fn window_minute(&self, window: &str, minute_start: i64) -> String {
        format!("{}win:{window}:m:{minute_start}", self.prefix)
    }

    /// HASH {count, sum, min, max} of one window hour (start in unix s).
    pub fn window_hour(&self, window: &str, hour_start: i64) -> String {
        format!("{}win:{window}:h:{hour_start}", self.prefix)
    }

    /// ZSET member → score of one leaderboard bucket (start in unix s).
    pub fn leaderboard(&self, board: &str, bucket_start: i64) -> String {
        format!("{}lb:{board}:{bucket_start}", self.prefix)
    }

    /// LIST of the device's latest events as JSON, newest first.
    pub fn recent(&self, device_id: &str) -> String {
        format!("{}recent:{device_id}", self.prefix)
    }
}

/// Start of the bucket of `len` seconds holding `secs`.
pub fn bucket_start(secs: i64, len: i64) -> i64 {
    secs.div_euclid(len) * len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_pipeline_hash_tag() {
        let k = Keys::new("shop");
        for key in [
            k.devices(),
            k.types(),
            k.stats(),
            k.dedup(3600),
            k.member_claims(3600),
            k.batch("b1"),
            k.window_minute("revenue", 60),
            k.window_hour("revenue", 3600),
            k.leaderboard("dau", 86400),
            k.recent("dev-1"),
        ] {
            assert!(key.starts_with("tp:{shop}:"), "{key}");
        }
    }

    #[test]
    fn bucket_start_rounds_down_also_before_the_epoch() {
        assert_eq!(bucket_start(119, 60), 60);
        assert_eq!(bucket_start(120, 60), 120);
        assert_eq!(bucket_start(-1, 60), -60);
    }
}
