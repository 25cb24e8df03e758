//! `CLUSTER NODES` parsed into a typed view (pure).
//!
//! Each line reads `<id> <ip:port@cport[,hostname]> <flags> <primary>
//! <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...`, where a
//! slot entry is `n`, `a-b`, or — only on the node's own (`myself`) line —
//! an open slot `[n->-id]` (migrating to id) or `[n-<-id]` (importing from
//! id). A node that has met nobody yet shows its own address as `:port`.

use super::SlotRange;

/// One node as the observing node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The 40-character node ID (random while in handshake).
    pub id: String,
    /// `ip:port` of its clients' port (`:port` when the node knows no IP yet).
    pub addr: String,
    pub flags: Flags,
    /// The ID of its primary, when it is a replica.
    pub primary: Option<String>,
    /// The cluster bus link to it is up.
    pub connected: bool,
    /// The slots it serves, in the order listed.
    pub slots: Vec<SlotRange>,
    /// Slots it is handing over: (slot, ID of the target).
    pub migrating: Vec<(u16, String)>,
    /// Slots it is taking over: (slot, ID of the source).
    pub importing: Vec<(u16, String)>,
}

/// The flags of a `CLUSTER NODES` line that matter here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub myself: bool,
    pub master: bool,
    pub slave: bool,
    /// Failure agreed by a majority of primaries (`fail`).
    pub fail: bool,
    /// Failure suspected by the observer alone (`fail?`).
    pub pfail: bool,
    pub handshake: bool,
    pub noaddr: bool,
}

impl Flags {
    /// Whether the observer may count on the node: not failing, not
    /// half-known.
    pub fn healthy(&self) -> bool {
        !(self.fail || self.pfail || self.handshake || self.noaddr)
    }
}

/// Everything one node knows of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub nodes: Vec<Node>,
}

/// A line that is not a `CLUSTER NODES` line, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of CLUSTER NODES: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

impl View {
    /// The observing node's own line.
    pub fn myself(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.flags.myself)
    }

    /// The node with this ID, if known.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Whether any node owns at least one slot.
    pub fn any_slots(&self) -> bool {
        self.nodes.iter().any(|n| !n.slots.is_empty())
    }
}

/// Parses the whole output of `CLUSTER NODES`; blank lines are skipped.
pub fn parse(text: &str) -> Result<View, ParseError> {
    let lines = text.lines().enumerate();
    let lines = lines.filter(|(_, l)| !l.trim().is_empty());
    let nodes = lines.map(|(i, l)| {
        parse_line(l).map_err(|reason| ParseError {
            line: i + 1,
            reason,
            text: l.to_string(),
        })
    });
    let nodes = nodes.collect::<Result<Vec<_>, _>>()?;
    if nodes.iter().filter(|n| n.flags.myself).count() != 1 {
        let text = text.chars().take(200).collect();
        return Err(ParseError {
            line: 0,
            reason: "not exactly one line flagged myself",
            text,
        });
    }
    Ok(View { nodes })
}

/// One line; the error says which field is wrong.
fn parse_line(line: &str) -> Result<Node, &'static str> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return Err("fewer than 8 fields");
    }
    let id = f[0];
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the node ID is not 40 hex digits");
    }
    let addr = f[1].split(['@', ',']).next().unwrap_or_default();
    let port = addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
    if !matches!(port, Some(Ok(_))) {
        return Err("the address has no port");
    }
    let mut flags = Flags::default();
    for flag in f[2].split(',') {
        match flag {
            "myself" => flags.myself = true,
            "master" => flags.master = true,
            "slave" => flags.slave = true,
            "fail" => flags.fail = true,
            "fail?" => flags.pfail = true,
            "handshake" => flags.handshake = true,
            "noaddr" => flags.noaddr = true,
            _ => {}
        }
    }
    let mut node = Node {
        id: id.to_string(),
        addr: addr.to_string(),
        flags,
        primary: Some(f[3]).filter(|p| *p != "-").map(str::to_string),
        connected: f[7] == "connected",
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for entry in &f[8..] {
        if let Some(open) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            let bad = "an open slot is not [n->-id] nor [n-<-id]";
            if let Some((slot, to)) = open.split_once("->-") {
                node.migrating
                    .push((slot.parse().map_err(|_| bad)?, to.to_string()));
            } else if let Some((slot, from)) = open.split_once("-<-") {
                node.importing
                    .push((slot.parse().map_err(|_| bad)?, from.to_string()));
            } else {
                return Err(bad);
            }
            continue;
        }
        let bad = "a slot range is not n or a-b";
        let (a, b) = entry.split_once('-').unwrap_or((entry, entry));
        let (a, b): (u16, u16) = (a.parse().map_err(|_| bad)?, b.parse().map_err(|_| bad)?);
        if a > b || b >= super::SLOTS {
            return Err(bad);
        }
        node.slots.push(SlotRange::new(a, b));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "86413971b3980065864439e002b1a4810fc9f0c1";
    const B: &str = "f464fe6e9905c36351ed08b14cf6090a2067fcb4";

    /// Node 41002 of a real 7.0.15 cluster: a primary with a slot half
    /// migrated to node A and one being imported from A, a replica that
    /// failed, and a new empty primary.
    const OPEN: &str = "\
7224bd2b59e205468cc82f75d9b5ca192894d116 127.0.0.1:41004@51004 master - 0 1796417533035 3 connected
50bebe80c1fb9b2ab5190cc7dc93f8975f67f8c6 127.0.0.1:41003@51003 slave,fail 86413971b3980065864439e002b1a4810fc9f0c1 1796417527400 1796417526898 1 disconnected
86413971b3980065864439e002b1a4810fc9f0c1 127.0.0.1:41001@51001 master - 0 1796417533440 1 connected 0-8191
f464fe6e9905c36351ed08b14cf6090a2067fcb4 127.0.0.1:41002@51002 myself,master - 0 1796417533000 0 connected 8192-16383 [100-<-86413971b3980065864439e002b1a4810fc9f0c1] [12182->-86413971b3980065864439e002b1a4810fc9f0c1]
";

    /// Node 41001 right after `CLUSTER MEET` to two others: both still in
    /// handshake (with temporary IDs), its own IP not yet learnt.
    const HANDSHAKE: &str = "\
183026e82d8ff1abfb521fb16444db2055da31b8 127.0.0.1:41003@51003 handshake - 0 0 0 disconnected
dbe4d2ac6c1cbdf566ecee440b6511155fd6d578 127.0.0.1:41002@51002 handshake - 0 0 0 disconnected
86413971b3980065864439e002b1a4810fc9f0c1 :41001@51001 myself,master - 0 0 0 connected 0-8191
";

    /// A replica's own view (41003), all links up.
    const REPLICA: &str = "\
86413971b3980065864439e002b1a4810fc9f0c1 127.0.0.1:41001@51001 master - 0 1796417523269 1 connected 0-8191
50bebe80c1fb9b2ab5190cc7dc93f8975f67f8c6 127.0.0.1:41003@51003 myself,slave 86413971b3980065864439e002b1a4810fc9f0c1 0 1796417522000 1 connected
f464fe6e9905c36351ed08b14cf6090a2067fcb4 127.0.0.1:41002@51002 master - 0 1796417523070 0 connected 8192-16383
";

    #[test]
    fn open_slots_appear_on_the_own_line_with_their_peer() {
        let view = parse(OPEN).unwrap();
        assert_eq!(view.nodes.len(), 4);
        let me = view.myself().unwrap();
        assert_eq!((me.id.as_str(), me.addr.as_str()), (B, "127.0.0.1:41002"));
        assert!(me.flags.master && !me.flags.slave && me.connected);
        assert_eq!(me.slots, [SlotRange::new(8192, 16383)]);
        assert_eq!(me.migrating, [(12182, A.to_string())]);
        assert_eq!(me.importing, [(100, A.to_string())]);
        let failed = view
            .node("50bebe80c1fb9b2ab5190cc7dc93f8975f67f8c6")
            .unwrap();
        assert!(failed.flags.slave && failed.flags.fail && !failed.connected);
        assert!(!failed.flags.healthy());
        assert_eq!(failed.primary.as_deref(), Some(A));
        let empty = &view.nodes[0];
        assert!(empty.flags.master && empty.slots.is_empty() && empty.flags.healthy());
        assert!(view.any_slots());
    }

    #[test]
    fn handshakes_and_an_unknown_own_ip_are_read() {
        let view = parse(HANDSHAKE).unwrap();
        assert!(
            view.nodes[..2]
                .iter()
                .all(|n| n.flags.handshake && !n.connected)
        );
        assert_eq!(view.myself().unwrap().addr, ":41001");
        assert_eq!(view.myself().unwrap().id, A);
    }

    #[test]
    fn a_replica_names_its_primary() {
        let view = parse(REPLICA).unwrap();
        let me = view.myself().unwrap();
        assert!(me.flags.slave && !me.flags.master);
        assert_eq!(me.primary.as_deref(), Some(A));
        assert!(me.slots.is_empty());
    }

    #[test]
    fn pfail_hostnames_and_single_slots_are_read() {
        let line = format!(
            "{A} 10.0.0.7:6379@16379,redis-0.redis myself,master - 0 0 4 connected 5 7-9\n{B} 10.0.0.8:6379@16379 master,fail? - 1 0 2 connected\n"
        );
        let view = parse(&line).unwrap();
        assert_eq!(view.nodes[0].addr, "10.0.0.7:6379");
        assert_eq!(
            view.nodes[0].slots,
            [SlotRange::new(5, 5), SlotRange::new(7, 9)]
        );
        assert!(view.nodes[1].flags.pfail && !view.nodes[1].flags.healthy());
    }

    #[test]
    fn malformed_output_is_an_error_naming_the_line() {
        let short = parse("abc def\n").unwrap_err();
        assert_eq!((short.line, short.reason), (1, "fewer than 8 fields"));
        let slot = format!("{A} 1.2.3.4:1@2 myself,master - 0 0 0 connected 9-3\n");
        assert_eq!(
            parse(&slot).unwrap_err().reason,
            "a slot range is not n or a-b"
        );
        let nobody = format!("{A} 1.2.3.4:1@2 master - 0 0 0 connected\n");
        assert_eq!(
            parse(&nobody).unwrap_err().reason,
            "not exactly one line flagged myself"
        );
    }
}
