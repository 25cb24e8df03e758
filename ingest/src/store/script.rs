//! The flush script's calling convention: the `EVALSHA` of one flush, its
//! arguments in the positional layout that the header of `flush.lua`
//! documents, and the parser of the script's reply. Pure; tested here
//! argument by argument, and against a real Redis in `tests/`.
//!
//! The script reads its arguments by position, so this file and the header
//! of `flush.lua` change together: a field added on one side only shifts
//! every argument after it.

use std::collections::HashSet;

use crate::aggregate::{OpKind, Writes};
use crate::store::refresh;
use crate::{Error, Result};

/// The Lua source of the flush script.
pub const SOURCE: &str = include_str!("flush.lua");

/// How long a flush marker outlives its flush: far longer than any retry.
pub const MARKER_TTL_SECONDS: u64 = 120;

/// A recent-events list is trimmed back to `keep` once it holds more than
/// this (trimming every flush would cost a command per device per flush).
pub fn trim_above(keep: u32) -> u32 {
    keep + (keep / 2).max(1)
}

/// How the script is named: by its SHA1 (`EVALSHA`), or by its source
/// (`EVAL`, when the server does not have it cached).
#[derive(Debug, Clone, Copy)]
pub enum Head<'a> {
    Sha(&'a str),
    Source,
}

/// The `EVALSHA` of one flush, in the argument layout of `flush.lua`:
/// the script, the flush's `marker` key (and, with `declare`, every key the
/// flush writes, for Redis Cluster to check), the `writes` of the plan
/// without the `duplicates` (claim numbers, recorded in the marker's
/// result), and for each list of `writes` whether its TTL is set again.
pub fn command(
    head: Head<'_>,
    marker: &str,
    declare: bool,
    writes: &Writes<'_>,
    refresh: &[bool],
    duplicates: &HashSet<u32>,
) -> redis::Cmd {
    let mut result = String::from("ok:");
    let mut sorted: Vec<u32> = duplicates.iter().copied().collect();
    sorted.sort_unstable();
    for (i, d) in sorted.iter().enumerate() {
        if i > 0 {
            result.push(',');
        }
        result.push_str(itoa::Buffer::new().format(*d));
    }
    let mut cmd = match head {
        Head::Sha(sha) => {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha);
            cmd
        }
        Head::Source => {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(SOURCE);
            cmd
        }
    };
    if declare {
        let keys = writes.keys();
        cmd.arg(1 + keys.len()).arg(marker).arg(keys);
    } else {
        cmd.arg(1).arg(marker);
    }
    cmd.arg(MARKER_TTL_SECONDS).arg(result);
    cmd.arg(writes.claims.len());
    for c in &writes.claims {
        cmd.arg(c.key).arg(c.ids.len());
        for id in &c.ids {
            cmd.arg(*id);
        }
    }
    for kind in OpKind::ALL {
        let groups = writes.groups.iter().filter(|g| g.kind == kind);
        cmd.arg(groups.clone().count());
        for g in groups {
            cmd.arg(g.key).arg(g.fields.len());
            if kind == OpKind::ZsetIncr {
                // Members first, then amounts (ZMSCORE and ZADD in slices).
                for &(member, _) in &g.fields {
                    cmd.arg(member);
                }
                for &(_, x) in &g.fields {
                    amount_arg(&mut cmd, x);
                }
                continue;
            }
            for &(field, x) in &g.fields {
                cmd.arg(field);
                match kind {
                    // Counts: whole numbers, summed exactly below 2^53.
                    OpKind::HashIncr => cmd.arg(x as i64),
                    _ => amount_arg(&mut cmd, x),
                };
            }
        }
    }
    // Lists sharing keep and TTL go in one group, so those are sent once
    // rather than per list.
    let mut groups: Vec<((u32, u32), Vec<usize>)> = Vec::new();
    for (n, l) in writes.lists.iter().enumerate() {
        let shape = (l.keep, l.ttl.map_or(0, refresh::list_ttl));
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, members)) => members.push(n),
            None => groups.push((shape, vec![n])),
        }
    }
    cmd.arg(groups.len());
    for ((keep, ttl), members) in &groups {
        cmd.arg(*keep)
            .arg(trim_above(*keep))
            .arg(*ttl)
            .arg(members.len());
        for &n in members {
            let l = &writes.lists[n];
            cmd.arg(l.key).arg(l.values.len());
            for v in &l.values {
                cmd.arg(*v);
            }
        }
        let due: Vec<&str> = members
            .iter()
            .filter(|&&n| refresh[n])
            .map(|&n| writes.lists[n].key)
            .collect();
        cmd.arg(due.len());
        for key in due {
            cmd.arg(key);
        }
    }
    cmd.arg(writes.expire_at.len());
    for &(key, at) in &writes.expire_at {
        cmd.arg(key).arg(at);
    }
    cmd
}

/// A summed amount as a script argument: whole numbers (counts, and sums of
/// whole values) as integers, which format several times faster than the
/// shortest round-trip form of a double and read back as the same double;
/// anything else in that shortest form.
fn amount_arg(cmd: &mut redis::Cmd, x: f64) -> &mut redis::Cmd {
    /// Below 2^53 every whole double is exact as an i64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if x.fract() == 0.0 && x.abs() < EXACT && !(x == 0.0 && x.is_sign_negative()) {
        cmd.arg(x as i64)
    } else {
        cmd.arg(x)
    }
}

/// A flush that is in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The plan's claims that were duplicates.
    pub duplicates: HashSet<u32>,
    /// How long the script ran inside Redis, in microseconds; `None` when an
    /// earlier attempt had applied it and this one only read the marker.
    pub script_micros: Option<u64>,
}

/// What the flush script answered.
#[derive(Debug, PartialEq)]
pub enum ScriptReply {
    /// Applied (now or by an earlier attempt).
    Applied(Applied),
    /// Nothing written: these claims of the plan (as numbered in
    /// [`crate::aggregate::Slot::Claimed`]) were taken already.
    Claimed(Vec<u32>),
}

/// Reads the script's answer to the command built from `writes`: `ok:` and
/// the duplicate claims (from the marker's result) once applied, with
/// `@` and the run time unless it is a replay; or `dup:` and the positions,
/// among the ids sent, of those already claimed.
pub fn parse_reply(reply: &str, writes: &Writes<'_>) -> Result<ScriptReply> {
    let bad = || Error::UnexpectedReply(format!("flush script answered {reply:?}"));
    let (result, script_micros) = match reply.split_once('@') {
        Some((result, micros)) => (result, Some(micros.parse::<u64>().map_err(|_| bad())?)),
        None => (reply, None),
    };
    let (list, applied) = match (result.strip_prefix("ok:"), result.strip_prefix("dup:")) {
        (Some(list), _) => (list, true),
        (_, Some(list)) => (list, false),
        _ => return Err(bad()),
    };
    let numbers = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| bad()));
    if applied {
        return Ok(ScriptReply::Applied(Applied {
            duplicates: numbers.collect::<Result<_>>()?,
            script_micros,
        }));
    }
    let sent: Vec<u32> = writes
        .claims
        .iter()
        .flat_map(|c| c.claims.iter().copied())
        .collect();
    let claimed = numbers
        .map(|p| sent.get(p? as usize).copied().ok_or_else(bad))
        .collect::<Result<_>>()?;
    Ok(ScriptReply::Claimed(claimed))
}

#[cfg(test)]
mod tests {
    use crate::aggregate::{ClaimWrite, ListWrite, OpGroup};

    use super::*;

    /// The arguments of a command after `EVALSHA`, as text.
    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => panic!("only simple arguments"),
            })
            .collect()
    }

    fn group<'a>(kind: OpKind, key: &'a str, fields: &[(&'a str, f64)]) -> OpGroup<'a> {
        OpGroup {
            kind,
            key,
            fields: fields.to_vec(),
        }
    }

    fn list<'a>(key: &'a str, keep: u32, ttl: Option<u32>, values: &[&'a str]) -> ListWrite<'a> {
        ListWrite {
            key,
            keep,
            ttl,
            values: values.iter().map(|v| v.as_bytes()).collect(),
        }
    }

    #[test]
    fn command_lays_out_every_part_of_a_flush_as_the_script_reads_it() {
        let writes = Writes {
            claims: vec![
                ClaimWrite {
                    key: "d:1",
                    ids: vec!["a", "b"],
                    claims: vec![0, 2],
                },
                ClaimWrite {
                    key: "d:2",
                    ids: vec!["c"],
                    claims: vec![3],
                },
            ],
            groups: vec![
                group(OpKind::HashIncr, "stats", &[("events", 3.0)]),
                group(OpKind::ZsetIncr, "lb", &[("u1", 2.0), ("u2", 0.5)]),
                group(OpKind::HashMax, "w", &[("max", 7.25)]),
                group(OpKind::HashIncr, "types", &[("a", 1.0), ("b", 2.0)]),
            ],
            lists: vec![
                list("r:1", 20, Some(600), &["x", "y"]),
                list("r:2", 5, None, &["z"]),
                list("r:3", 20, Some(600), &["w"]),
            ],
            expire_at: vec![("w", 1_700_000_000)],
        };
        let duplicates = [7, 1].into_iter().collect();
        let cmd = command(
            Head::Sha("sha"),
            "m",
            false,
            &writes,
            &[false, false, true],
            &duplicates,
        );
        #[rustfmt::skip]
        let expected = [
            "sha", "1", "m",
            // marker_ttl, result (the duplicates in order)
            "120", "ok:1,7",
            // n_sets, (set_key, n, id * n) * n_sets
            "2", "d:1", "2", "a", "b", "d:2", "1", "c",
            // HINCRBY: n_keys, (key, n, (field, amount) * n) * n_keys
            "2", "stats", "1", "events", "3", "types", "2", "a", "1", "b", "2",
            // HINCRBYFLOAT
            "0",
            // ZSET increments: n_keys, (key, n, member * n, amount * n) * n_keys
            "1", "lb", "2", "u1", "u2", "2", "0.5",
            // min, max
            "0",
            "1", "w", "1", "max", "7.25",
            // n_groups, (keep, trim_above, ttl, n_lists, (key, n, value * n) * n_lists,
            //            n_refresh, key * n_refresh) * n_groups
            "2",
            "20", "30", "660", "2", "r:1", "2", "x", "y", "r:3", "1", "w", "1", "r:3",
            "5", "7", "0", "1", "r:2", "1", "z", "0",
            // n_expire, (key, unix_seconds) * n_expire
            "1", "w", "1700000000",
        ];
        assert_eq!(args(&cmd), expected);
    }

    #[test]
    fn an_empty_flush_still_sends_every_count() {
        let cmd = command(
            Head::Sha("sha"),
            "m",
            false,
            &Writes::default(),
            &[],
            &HashSet::new(),
        );
        assert_eq!(
            args(&cmd),
            [
                "sha", "1", "m", "120", "ok:", "0", "0", "0", "0", "0", "0", "0", "0"
            ]
        );
    }

    #[test]
    fn lists_are_trimmed_once_half_as_long_again_as_kept() {
        assert_eq!(trim_above(20), 30);
        assert_eq!(trim_above(3), 4);
        assert_eq!(trim_above(1), 2);
    }

    #[test]
    fn amounts_are_sent_as_text_that_reads_back_as_the_same_double() {
        let mut cmd = redis::cmd("X");
        let xs = [
            617.0,
            -3.0,
            2.5,
            0.1 + 0.2,
            -0.0,
            1e300,
            9_007_199_254_740_993.0,
        ];
        for x in xs {
            amount_arg(&mut cmd, x);
        }
        let args = args(&cmd);
        assert_eq!(&args[..2], ["617", "-3"]);
        for (text, x) in args.iter().zip(xs) {
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                x.to_bits(),
                "{text}"
            );
        }
    }

    #[test]
    fn flush_reply_lists_duplicates_or_taken_claims() {
        let writes = Writes {
            claims: vec![
                ClaimWrite {
                    key: "d:1",
                    ids: vec!["a", "b"],
                    claims: vec![4, 9],
                },
                ClaimWrite {
                    key: "d:2",
                    ids: vec!["c"],
                    claims: vec![11],
                },
            ],
            ..Writes::default()
        };
        let parse = |reply| parse_reply(reply, &writes);
        let applied = |d: &[u32], t: Option<u64>| {
            ScriptReply::Applied(Applied {
                duplicates: d.iter().copied().collect(),
                script_micros: t,
            })
        };
        assert_eq!(parse("ok:@1250").unwrap(), applied(&[], Some(1250)));
        assert_eq!(parse("ok:0,7@3").unwrap(), applied(&[0, 7], Some(3)));
        // A replay answers from the marker, without a run time.
        assert_eq!(parse("ok:0,7").unwrap(), applied(&[0, 7], None));
        // Positions among the ids sent, across sets, name the plan's claims.
        assert_eq!(parse("dup:1,2").unwrap(), ScriptReply::Claimed(vec![9, 11]));
        assert!(parse("dup:3").is_err(), "only three ids were sent");
        assert!(parse("garbage").is_err());
        assert!(parse("ok:x").is_err());
        assert!(parse("ok:1@soon").is_err());
    }
}
