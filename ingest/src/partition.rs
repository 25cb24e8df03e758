//! The partitions of a pipeline on Redis Cluster (pure): which partition an
//! event belongs to, and the hash tag that puts each partition's keys in one
//! slot (docs/redis-layout.md, Sharding).
//!
//! A sharded pipeline spreads its keys over P partitions (`--redis-partitions`,
//! fixed for the life of the pipeline's data). An event belongs to its
//! device's partition, and everything the event writes lives there: the
//! device's count and recent events, and the event's share of the totals,
//! type counts, windows and leaderboards, and its dedup claim. So one script
//! call on one shard stores (or refuses) an event whole, exactly as the
//! single-Redis flush does; queries merge the partitions' shares.
//!
//! Each partition's hash tag is chosen so that its slot lies in the middle
//! half of the partition's 1/P of the slot space: equal contiguous slot
//! ranges, the layout `redis-cli --cluster create` and `rebalance` produce,
//! then hold equal numbers of partitions whenever the number of shards
//! divides P.

/// Slots of a Redis Cluster.
pub const SLOTS: u32 = 16384;
/// Partitions of a sharded pipeline unless set: divisible by 1, 2, 3, 4, 6
/// and 12 shards.
pub const DEFAULT_PARTITIONS: u16 = 12;
/// The most partitions a pipeline may have.
pub const MAX_PARTITIONS: u16 = 1024;

/// The partitions of one pipeline and their hash tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    tags: Vec<String>,
}

impl Partitions {
    /// One partition whose tag is the pipeline name: the single-Redis
    /// layout, `tp:{<pipeline>}:…`.
    pub fn single(pipeline: &str) -> Partitions {
        Partitions {
            tags: vec![pipeline.to_string()],
        }
    }

    /// `count` partitions (1..=[`MAX_PARTITIONS`]) with tags
    /// `<pipeline>:<p>:<n>`, `n` the smallest number that puts the tag's
    /// slot in the middle half of partition `p`'s share of the slots.
    pub fn sharded(pipeline: &str, count: u16) -> Partitions {
        assert!(
            (1..=MAX_PARTITIONS).contains(&count),
            "partitions: 1..={MAX_PARTITIONS}"
        );
        let share = SLOTS as f64 / count as f64;
        let tags = (0..count as u32)
            .map(|p| {
                let lo = (p as f64 + 0.25) * share;
                let hi = (p as f64 + 0.75) * share;
                (0u32..)
                    .map(|n| format!("{pipeline}:{p}:{n}"))
                    .find(|tag| {
                        let slot = key_slot(tag.as_bytes()) as f64;
                        lo <= slot && slot < hi
                    })
                    .expect("CRC16 reaches every slot")
            })
            .collect();
        Partitions { tags }
    }

    pub fn count(&self) -> usize {
        self.tags.len()
    }

    /// The hash tag of partition `p` (what goes between the braces).
    pub fn tag(&self, p: usize) -> &str {
        &self.tags[p]
    }

    /// The partition of a device's events.
    pub fn of(&self, device_id: &str) -> usize {
        if self.tags.len() == 1 {
            return 0;
        }
        (device_hash(device_id) % self.tags.len() as u64) as usize
    }
}

/// A stable 64-bit hash of a device id: FNV-1a, then the SplitMix64
/// finalizer so that ids differing in their last character spread over
/// every partition. Part of the stored layout: changing it moves devices.
pub fn device_hash(device_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in device_id.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (the
/// text between the first `{` and the next `}`, when not empty) or of the
/// whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    (crc16(hashed) as u32 % SLOTS) as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slot_is_redis_cluster_s() {
        // The check value of CRC16/XMODEM, and slots Redis's CLUSTER KEYSLOT gives.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn each_partition_s_slot_lies_in_the_middle_of_its_share() {
        for count in [2u16, 3, 12, 16, 100] {
            let parts = Partitions::sharded("ns/shop", count);
            let share = SLOTS as f64 / count as f64;
            for p in 0..count as usize {
                let slot = key_slot(format!("tp:{{{}}}:devices", parts.tag(p)).as_bytes()) as f64;
                assert!(
                    slot >= (p as f64 + 0.25) * share && slot < (p as f64 + 0.75) * share,
                    "{count} partitions: {} has slot {slot}",
                    parts.tag(p)
                );
            }
        }
    }

    #[test]
    fn equal_slot_ranges_hold_equal_numbers_of_partitions() {
        let parts = Partitions::sharded("default", DEFAULT_PARTITIONS);
        for shards in [1u32, 2, 3, 4, 6, 12] {
            // redis-cli's ranges: shard i owns [i*S/n, (i+1)*S/n).
            let mut per_shard = vec![0; shards as usize];
            for p in 0..parts.count() {
                let slot = key_slot(parts.tag(p).as_bytes()) as u32;
                per_shard[(slot * shards / SLOTS) as usize] += 1;
            }
            let want = DEFAULT_PARTITIONS as u32 / shards;
            assert!(
                per_shard.iter().all(|&n| n == want),
                "{shards}: {per_shard:?}"
            );
        }
    }

    #[test]
    fn devices_spread_evenly_and_stay_where_they_are() {
        let parts = Partitions::sharded("default", 12);
        let mut per = [0u32; 12];
        for i in 0..12_000 {
            per[parts.of(&format!("dev-{i:05}"))] += 1;
        }
        let (min, max) = (per.iter().min().unwrap(), per.iter().max().unwrap());
        assert!(*min > 900 && *max < 1100, "{per:?}");
        // The hash is part of the stored layout: the same id must land in
        // the same partition in every pod and every version.
        assert_eq!(device_hash(""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(device_hash("dev-1"), 0x4206_61e1_113b_2d68);
        assert_eq!(device_hash("sensor-00042"), 0x281e_24ea_b21e_2af4);
        assert_eq!(parts.of("dev-1"), 4);
        assert_eq!(Partitions::single("p").of("anything"), 0);
    }
}
