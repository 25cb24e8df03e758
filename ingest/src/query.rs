//! Reads of the aggregates, shared by the HTTP routes and the gRPC
//! `TelemetryQuery` service. The answers are the HTTP API's JSON bodies
//! (`telemetry_proto::json`), which also convert into the protobuf messages.
//!
//! On Redis Cluster each aggregate is read from every partition at once
//! (one single-slot pipeline per partition) and merged by [`merge`] into
//! what one Redis would answer; a device's count and recent events are read
//! from its partition only.

pub mod merge;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use redis::AsyncCommands;
use serde::Deserialize;
use telemetry_proto::json::{
    CounterValue, Counters, DeviceCount, Leaderboard, LeaderboardEntry, Stats, Window, WindowPoint,
};
use telemetry_proto::v1 as pb;
use tokio::sync::watch;

use crate::aggregate::Settings;
use crate::event::Event;
use crate::health::Health;
use crate::intake::now_ms;
use crate::keys::Keys;
use crate::keys::bucket_start;
use crate::metrics::Metrics;
use crate::queue::DepthGauge;
use crate::store::{Conn, Store};
use crate::{Error, Result};
use merge::MinuteRow;

pub const DEFAULT_DEVICE_LIMIT: usize = 100;
pub const MAX_DEVICE_LIMIT: usize = 10_000;
pub const DEFAULT_TOP_N: usize = 10;
pub const MAX_TOP_N: usize = 1_000;
pub const DEFAULT_WINDOW_MINUTES: u32 = 15;
pub const MAX_WINDOW_MINUTES: u32 = 1_440;
pub const MAX_RECENT_LIMIT: usize = 1_000;

/// The read side of a pipeline.
#[derive(Debug, Clone)]
pub struct Query {
    pub store: Store,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub queue: DepthGauge,
    pub rate: Arc<RateTracker>,
}

/// Order of the device list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSort {
    /// Most events first (ties by device id).
    #[default]
    Count,
    /// By device id, ascending.
    Device,
}

/// Parameters of the device-counts query.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceParams {
    /// How many devices (1..=10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Only this device.
    pub device_id: Option<String>,
    /// `count` (most events first) or `device` (by id).
    #[serde(default)]
    #[param(required = false, inline)]
    pub sort: DeviceSort,
}

impl DeviceParams {
    pub fn from_proto(r: &pb::DeviceCountsRequest) -> Result<Self> {
        let sort = match r.sort.as_str() {
            "" | "count" => DeviceSort::Count,
            "device" => DeviceSort::Device,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "sort: must be 'count' or 'device' (got '{other}')"
                )));
            }
        };
        Ok(DeviceParams {
            limit: (r.limit > 0).then_some(r.limit as usize),
            device_id: (!r.device_id.is_empty()).then(|| r.device_id.clone()),
            sort,
        })
    }

    /// The number of devices asked for, checked.
    pub fn limit(&self) -> Result<usize> {
        match self.limit {
            None => Ok(DEFAULT_DEVICE_LIMIT),
            Some(n) if (1..=MAX_DEVICE_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(Error::InvalidArgument(format!(
                "limit: must be between 1 and {MAX_DEVICE_LIMIT} (got {n})"
            ))),
        }
    }
}

/// A leaderboard's `topN`, checked (default [`DEFAULT_TOP_N`]).
pub fn check_top_n(top_n: Option<usize>) -> Result<usize> {
    let top_n = top_n.unwrap_or(DEFAULT_TOP_N);
    if !(1..=MAX_TOP_N).contains(&top_n) {
        return Err(Error::InvalidArgument(format!(
            "topN: must be between 1 and {MAX_TOP_N} (got {top_n})"
        )));
    }
    Ok(top_n)
}

/// A leaderboard's `bucket`: the start of a bucket of `len` seconds, or the
/// current one (`now_s`, unix seconds) when absent.
pub fn check_bucket(bucket: Option<i64>, len: i64, now_s: i64) -> Result<i64> {
    match bucket {
        None => Ok(bucket_start(now_s, len)),
        Some(b) if b.rem_euclid(len) == 0 => Ok(b),
        Some(b) => Err(Error::InvalidArgument(format!(
            "bucket: must be the start of a {len}-second bucket in unix seconds (got {b})"
        ))),
    }
}

/// A window's `minutes`, checked (default [`DEFAULT_WINDOW_MINUTES`]).
pub fn check_minutes(minutes: Option<u32>) -> Result<u32> {
    let minutes = minutes.unwrap_or(DEFAULT_WINDOW_MINUTES);
    if !(1..=MAX_WINDOW_MINUTES).contains(&minutes) {
        return Err(Error::InvalidArgument(format!(
            "minutes: must be between 1 and {MAX_WINDOW_MINUTES} (got {minutes})"
        )));
    }
    Ok(minutes)
}

/// How many recent events of a device to return: `limit`, or the `keep`
/// the config keeps per device when absent.
pub fn check_recent_limit(limit: Option<usize>, keep: usize) -> Result<usize> {
    let limit = limit.unwrap_or(keep.max(1));
    if !(1..=MAX_RECENT_LIMIT).contains(&limit) {
        return Err(Error::InvalidArgument(format!(
            "limit: must be between 1 and {MAX_RECENT_LIMIT} (got {limit})"
        )));
    }
    Ok(limit)
}

impl Query {
    fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    fn conn(&self) -> Conn {
        self.store.reader()
    }

    /// The keys of every partition (one on a single Redis).
    fn all_keys(&self) -> impl Iterator<Item = &Keys> {
        self.store.all_keys().iter()
    }

    /// The keys of the partition holding `device_id`.
    fn device_keys(&self, device_id: &str) -> &Keys {
        self.store
            .partition_keys(self.store.partitions().of(device_id))
    }

    /// Event counts per device.
    pub async fn devices(&self, params: &DeviceParams) -> Result<Vec<DeviceCount>> {
        let limit = params.limit()?;
        if let Some(device) = &params.device_id {
            let mut conn = self.conn();
            let key = self.device_keys(device).devices();
            let score: Option<f64> = conn.zscore(&key, device).await?;
            return Ok(score
                .map(|s| DeviceCount {
                    device_id: device.clone(),
                    count: s as u64,
                })
                .into_iter()
                .collect());
        }
        let rows: Vec<(String, f64)> = match params.sort {
            DeviceSort::Count => {
                let reads = try_join_all(self.all_keys().map(|k| {
                    let mut conn = self.conn();
                    async move { top_with_ties(&mut conn, &k.devices(), limit).await }
                }))
                .await?;
                merge::disjoint_top_n(reads, limit)
            }
            DeviceSort::Device => {
                let reads = try_join_all(self.all_keys().map(|k| {
                    let mut conn = self.conn();
                    async move {
                        let rows: Vec<(String, f64)> =
                            conn.zrange_withscores(k.devices(), 0, -1).await?;
                        Ok::<_, Error>(rows)
                    }
                }))
                .await?;
                let mut rows: Vec<(String, f64)> = reads.into_iter().flatten().collect();
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                rows.truncate(limit);
                rows
            }
        };
        Ok(rows
            .into_iter()
            .map(|(device_id, s)| DeviceCount {
                device_id,
                count: s as u64,
            })
            .collect())
    }

    /// Counts per event type; all known types when `types` is empty.
    pub async fn counters(&self, types: &[String]) -> Result<Counters> {
        let shares = try_join_all(self.all_keys().map(|k| {
            let mut conn = self.conn();
            async move {
                let key = k.types();
                let share: Vec<(String, u64)> = if types.is_empty() {
                    let all: HashMap<String, u64> = conn.hgetall(&key).await?;
                    all.into_iter().collect()
                } else {
                    let values: Vec<Option<u64>> = redis::cmd("HMGET")
                        .arg(&key)
                        .arg(types)
                        .query_async(&mut conn)
                        .await?;
                    types
                        .iter()
                        .cloned()
                        .zip(values.into_iter().map(|c| c.unwrap_or(0)))
                        .collect()
                };
                Ok::<_, Error>(share)
            }
        }))
        .await?;
        let mut sums: HashMap<String, u64> = HashMap::new();
        for (event_type, count) in shares.into_iter().flatten() {
            *sums.entry(event_type).or_default() += count;
        }
        let mut counters: Vec<CounterValue> = sums
            .into_iter()
            .map(|(event_type, count)| CounterValue { event_type, count })
            .collect();
        counters.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.event_type.cmp(&b.event_type))
        });
        let total = counters.iter().map(|c| c.count).sum();
        Ok(Counters { counters, total })
    }

    /// The top `top_n` of a leaderboard bucket (the current one by default).
    pub async fn leaderboard(
        &self,
        name: &str,
        top_n: Option<usize>,
        bucket: Option<i64>,
    ) -> Result<Leaderboard> {
        let settings = self.settings();
        let board = settings
            .config
            .leaderboard(name)
            .ok_or_else(|| Error::NotFound {
                kind: "leaderboard",
                name: name.to_string(),
                known: settings
                    .config
                    .leaderboards
                    .iter()
                    .map(|l| l.name.clone())
                    .collect(),
            })?;
        let top_n = check_top_n(top_n)?;
        let bucket = check_bucket(bucket, board.bucket.seconds() as i64, now_ms() / 1000)?;
        // Each member is scored in one partition (its device's or its own).
        let reads = try_join_all(self.all_keys().map(|k| {
            let mut conn = self.conn();
            let key = k.leaderboard(name, bucket);
            async move { top_with_ties(&mut conn, &key, top_n).await }
        }))
        .await?;
        let rows = merge::disjoint_top_n(reads, top_n);
        Ok(Leaderboard {
            name: name.to_string(),
            bucket,
            entries: rank(rows, top_n),
        })
    }

    /// The last `minutes` minutes of a window, zero-filled, oldest first.
    pub async fn window(&self, name: &str, minutes: Option<u32>) -> Result<Window> {
        let settings = self.settings();
        settings
            .config
            .window(name)
            .ok_or_else(|| Error::NotFound {
                kind: "window",
                name: name.to_string(),
                known: settings
                    .config
                    .windows
                    .iter()
                    .map(|w| w.name.clone())
                    .collect(),
            })?;
        let minutes = check_minutes(minutes)?;
        let now = bucket_start(now_ms() / 1000, 60);
        let starts: Vec<i64> = (0..minutes as i64).rev().map(|i| now - 60 * i).collect();
        let shares = try_join_all(self.all_keys().map(|k| {
            let mut pipe = redis::pipe();
            for &start in &starts {
                pipe.cmd("HMGET")
                    .arg(k.window_minute(name, start))
                    .arg(&["count", "sum", "min", "max"]);
            }
            let mut conn = self.conn();
            async move {
                let rows: Vec<MinuteRow> = pipe.query_async(&mut conn).await?;
                Ok::<_, Error>(rows)
            }
        }))
        .await?;
        let rows = shares
            .into_iter()
            .reduce(|a, b| {
                a.into_iter()
                    .zip(b)
                    .map(|(x, y)| merge::merge_minute(x, y))
                    .collect()
            })
            .unwrap_or_default();
        let points: Vec<WindowPoint> = starts
            .iter()
            .zip(rows)
            .map(|(&minute, (count, sum, min, max))| WindowPoint {
                minute,
                count: count.unwrap_or(0),
                sum: sum.unwrap_or(0.0),
                min,
                max,
            })
            .collect();
        let total = total_of(&points);
        Ok(Window {
            name: name.to_string(),
            points,
            total,
        })
    }

    /// The device's latest events, newest first.
    pub async fn recent(&self, device_id: &str, limit: Option<usize>) -> Result<Vec<Event>> {
        let keep = self.settings().config.recent_events.per_device as usize;
        let limit = check_recent_limit(limit, keep)?;
        // The flush trims lists lazily (they may hold a few more than
        // `keep`); the newest `keep` are the device's recent events.
        let read = if keep > 0 { limit.min(keep) } else { limit };
        let mut conn = self.conn();
        let rows: Vec<Vec<u8>> = conn
            .lrange(
                self.device_keys(device_id).recent(device_id),
                0,
                read as isize - 1,
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|stored| crate::recent::decode(device_id, stored))
            .collect())
    }

    /// Pipeline totals from Redis and this pod's own figures.
    pub async fn stats(&self) -> Result<Stats> {
        let shares = try_join_all(self.all_keys().map(|k| {
            let mut conn = self.conn();
            async move {
                let share: (Option<u64>, u64) = redis::pipe()
                    .hget(k.stats(), "events")
                    .zcard(k.devices())
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, Error>(share)
            }
        }))
        .await?;
        let events = shares.iter().map(|s| s.0).reduce(|a, b| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        });
        let devices: u64 = shares.iter().map(|s| s.1).sum();
        let m = &self.metrics;
        let sum = |v: &prometheus::IntCounterVec| -> u64 {
            use prometheus::core::Collector;
            v.collect()
                .iter()
                .flat_map(|f| {
                    f.get_metric()
                        .iter()
                        .map(|m| m.get_counter().get_value() as u64)
                })
                .sum()
        };
        Ok(Stats {
            events_total: events.flatten().unwrap_or(0),
            devices,
            received_total: sum(&m.received),
            accepted_total: m.accepted.get(),
            rejected_total: sum(&m.rejected),
            duplicates_total: m.duplicates.get(),
            queue_depth: self.queue.depth() as u64,
            queue_capacity: self.queue.capacity() as u64,
            redis_ok: self.health.redis_up(),
            accepted_per_second: self.rate.per_second(),
        })
    }
}

/// The top `n` of a sorted set, extended with every member tied with the
/// last one, so the cut at `n` is made by our tie rule (member ascending),
/// not Redis's.
async fn top_with_ties(conn: &mut Conn, key: &str, n: usize) -> Result<Vec<(String, f64)>> {
    let mut rows: Vec<(String, f64)> = conn.zrevrange_withscores(key, 0, n as isize - 1).await?;
    if rows.len() < n {
        return Ok(rows);
    }
    let Some(&(_, last)) = rows.last() else {
        return Ok(rows);
    };
    let tied: Vec<(String, f64)> = conn.zrangebyscore_withscores(key, last, last).await?;
    for row in tied {
        if !rows.iter().any(|(m, _)| *m == row.0) {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Sorts by score (descending) then member, keeps `n`, ranks with ties.
pub fn rank(mut rows: Vec<(String, f64)>, n: usize) -> Vec<LeaderboardEntry> {
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(n);
    let mut entries = Vec::with_capacity(rows.len());
    let mut rank = 0;
    let mut prev = None;
    for (i, (member, score)) in rows.into_iter().enumerate() {
        if prev != Some(score) {
            rank = i as u32 + 1;
            prev = Some(score);
        }
        entries.push(LeaderboardEntry {
            rank,
            member,
            score,
        });
    }
    entries
}

/// The window total over its points.
pub fn total_of(points: &[WindowPoint]) -> WindowPoint {
    let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, None) => x,
        (None, y) => y,
    };
    points
        .iter()
        .fold(WindowPoint::default(), |t, p| WindowPoint {
            minute: 0,
            count: t.count + p.count,
            sum: t.sum + p.sum,
            min: pick(t.min, p.min, f64::min),
            max: pick(t.max, p.max, f64::max),
        })
}

/// Accepted events per second over the last ten seconds, sampled each second.
#[derive(Debug, Default)]
pub struct RateTracker {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl RateTracker {
    pub const SPAN: Duration = Duration::from_secs(10);

    pub fn record(&self, at: Instant, accepted: u64) {
        let mut s = self.samples.lock().expect("not poisoned");
        s.push_back((at, accepted));
        while s.len() > 2
            && s.front()
                .is_some_and(|(t, _)| at.duration_since(*t) > Self::SPAN)
        {
            s.pop_front();
        }
    }

    pub fn per_second(&self) -> f64 {
        let s = self.samples.lock().expect("not poisoned");
        match (s.front(), s.back()) {
            (Some((t0, a0)), Some((t1, a1))) if t1 > t0 => {
                (a1 - a0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The gRPC answer of the device-counts query.
pub fn device_counts_response(v: Vec<DeviceCount>) -> pb::DeviceCountsResponse {
    {
        pb::DeviceCountsResponse {
            devices: v
                .into_iter()
                .map(|d| pb::DeviceCount {
                    device_id: d.device_id,
                    count: d.count,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_shares_ranks_on_ties_and_orders_ties_by_member() {
        let rows = vec![
            ("b".into(), 5.0),
            ("c".into(), 9.0),
            ("a".into(), 5.0),
            ("d".into(), 1.0),
        ];
        let entries = rank(rows, 3);
        let got: Vec<(u32, &str)> = entries
            .iter()
            .map(|e| (e.rank, e.member.as_str()))
            .collect();
        assert_eq!(got, [(1, "c"), (2, "a"), (2, "b")]);
    }

    #[test]
    fn window_total_sums_and_keeps_extremes_of_minutes_with_values() {
        let points = [
            WindowPoint {
                minute: 60,
                count: 2,
                sum: 3.0,
                min: Some(1.0),
                max: Some(2.0),
            },
            WindowPoint {
                minute: 120,
                ..Default::default()
            },
            WindowPoint {
                minute: 180,
                count: 1,
                sum: -4.0,
                min: Some(-4.0),
                max: Some(-4.0),
            },
        ];
        let t = total_of(&points);
        assert_eq!(
            (t.count, t.sum, t.min, t.max),
            (3, -1.0, Some(-4.0), Some(2.0))
        );
    }

    #[test]
    fn rate_is_the_slope_over_the_samples() {
        let r = RateTracker::default();
        let t0 = Instant::now();
        r.record(t0, 100);
        r.record(t0 + Duration::from_secs(2), 300);
        assert_eq!(r.per_second(), 100.0);
    }
}
