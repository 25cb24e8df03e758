//! Pod IP allocation in 127.0.0.0/8 (Linux routes the whole range to the
//! loopback interface, so every pod gets its own address and its container
//! ports never collide with another pod's).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Hands out 127.0.X.Y addresses, never 127.0.0.1 (the control plane's) nor
/// .0/.255 host parts. Allocation goes round-robin rather than lowest-free
/// so that an address is not reused right after its pod died, while stale
/// clients may still dial it.
#[derive(Debug)]
pub struct PodIps {
    in_use: BTreeSet<u32>,
    next: u32,
    first: u32,
    last: u32,
}

impl Default for PodIps {
    fn default() -> Self {
        Self::new(Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 255, 254))
    }
}

impl PodIps {
    /// An allocator for the inclusive range `first..=last`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        let (first, last) = (u32::from(first), u32::from(last));
        Self {
            in_use: BTreeSet::new(),
            next: first,
            first,
            last,
        }
    }

    fn usable(ip: u32) -> bool {
        let host = ip & 0xff;
        host != 0 && host != 255 && ip != u32::from(Ipv4Addr::new(127, 0, 0, 1))
    }

    /// Marks an address as taken (a pod that already runs, e.g. after the
    /// stand-in restarted).
    pub fn claim(&mut self, ip: Ipv4Addr) {
        self.in_use.insert(ip.into());
    }

    /// The next free address, or `None` when the range is exhausted.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let size = self.last - self.first + 1;
        for _ in 0..size {
            let candidate = self.next;
            self.next = if self.next >= self.last {
                self.first
            } else {
                self.next + 1
            };
            if Self::usable(candidate) && self.in_use.insert(candidate) {
                return Some(candidate.into());
            }
        }
        None
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.in_use.remove(&u32::from(ip));
    }
}

/// The IPv4 addresses that have a listening TCP socket, from the text of
/// `/proc/net/tcp`. Another testenv's pods (or anyone's test server) may
/// already listen on a 127.0.0.N; the stand-in skips such addresses.
pub fn listening_ips(proc_net_tcp: &str) -> BTreeSet<Ipv4Addr> {
    const LISTEN: &str = "0A";
    proc_net_tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            (state == LISTEN).then_some(local)
        })
        .filter_map(|local| {
            let hex = local.split(':').next()?;
            // The kernel prints the network-order address as a native u32,
            // so its native bytes are the address bytes.
            let raw = u32::from_str_radix(hex, 16).ok()?;
            Some(Ipv4Addr::from(raw.to_ne_bytes()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_addresses_are_read_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0200007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000\n\
            1: 0300007F:1F40 0100007F:9C40 01 00000000:00000000 00:00000000\n\
            2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000\n";
        let ips = listening_ips(text);
        assert!(ips.contains(&Ipv4Addr::new(127, 0, 0, 2)));
        assert!(
            !ips.contains(&Ipv4Addr::new(127, 0, 0, 3)),
            "established, not listening"
        );
        assert!(ips.contains(&Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn starts_at_127_0_0_2_and_skips_claimed_addresses() {
        let mut ips = PodIps::default();
        ips.claim(Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 0, 0, 4)));
    }

    #[test]
    fn released_addresses_are_reused_only_after_a_full_round() {
        let mut ips = PodIps::new(Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 4));
        let a = ips.allocate().unwrap();
        ips.release(a);
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 0, 0, 4)));
        assert_eq!(ips.allocate(), Some(a));
        assert_eq!(ips.allocate(), None);
    }

    #[test]
    fn never_hands_out_network_broadcast_or_the_control_plane_address() {
        let mut ips = PodIps::new(Ipv4Addr::new(127, 0, 0, 0), Ipv4Addr::new(127, 0, 1, 1));
        let all: Vec<_> = std::iter::from_fn(|| ips.allocate()).collect();
        assert_eq!(all.len(), 253 + 1);
        assert!(!all.contains(&Ipv4Addr::new(127, 0, 0, 1)));
        assert!(!all.contains(&Ipv4Addr::new(127, 0, 0, 255)));
        assert!(!all.contains(&Ipv4Addr::new(127, 0, 1, 0)));
        assert!(all.iter().all(|ip| ip.is_loopback()));
    }
}
