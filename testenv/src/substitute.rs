//! Plays DNS and kube-proxy for one process: Service host names in its
//! arguments and environment become the loopback address of a Ready pod
//! behind the Service (there is neither DNS nor kube-proxy here).
//!
//! Only host positions are rewritten: the host of a URL authority (after `//`
//! and any `user:pass@`), or a whole value of the form `host` or `host:port`
//! (also after `--flag=`). Recognised forms: `NAME.NS.svc.cluster.local`,
//! `NAME.NS.svc`, `NAME.NS` and a bare `NAME` in the pod's namespace. When
//! the Service port differs from the target port, the port after the host is
//! rewritten too.

use std::net::Ipv4Addr;

/// What a host name refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No Service of that name: the text is left alone.
    NotAService,
    /// A Service with no Ready pod yet: the process must wait.
    NotReady,
    /// A Service and the pod that stands for it.
    Ready(Target),
}

/// The Ready pod chosen for a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ip: Ipv4Addr,
    /// (Service port, target port on the pod).
    pub ports: Vec<(u16, u16)>,
}

/// A Service named in a value has no Ready pod yet (`name.namespace`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {0} has no Ready pod yet")]
pub struct Unready(pub String);

/// Rewrites the Service hosts in `value`. `resolve(name, namespace)` says
/// what a name refers to.
pub fn substitute(
    value: &str,
    namespace: &str,
    resolve: &dyn Fn(&str, &str) -> Lookup,
) -> Result<String, Unready> {
    let mut spans = host_spans(value);
    spans.sort_unstable();
    spans.dedup();
    let mut out = value.to_owned();
    // Back to front, so earlier spans keep their offsets.
    for (start, end) in spans.into_iter().rev() {
        let Some((name, ns)) = service_of(&value[start..end], namespace) else {
            continue;
        };
        match resolve(name, ns) {
            Lookup::NotAService => {}
            Lookup::NotReady => return Err(Unready(format!("{name}.{ns}"))),
            Lookup::Ready(target) => {
                let (port, port_end) = port_after(value, end);
                let mut replacement = target.ip.to_string();
                let mut replace_end = end;
                if let Some(port) = port {
                    let mapped = target
                        .ports
                        .iter()
                        .find(|(service_port, _)| *service_port == port)
                        .map_or(port, |(_, target_port)| *target_port);
                    replacement.push_str(&format!(":{mapped}"));
                    replace_end = port_end;
                }
                out.replace_range(start..replace_end, &replacement);
            }
        }
    }
    Ok(out)
}

/// Byte ranges of the host positions in `value`.
fn host_spans(value: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    // A whole value `host` or `host:port`, possibly after `--flag=`.
    let body = match value.find('=') {
        Some(eq) if value.starts_with('-') => eq + 1,
        _ => 0,
    };
    let rest = &value[body..];
    let host_len = rest.find(':').unwrap_or(rest.len());
    let port = &rest[host_len..];
    if host_len > 0 && (port.is_empty() || is_port_suffix(port)) {
        spans.push((body, body + host_len));
    }
    // URL authorities.
    let mut from = 0;
    while let Some(at) = value[from..].find("//") {
        let auth_start = from + at + 2;
        let auth_end = value[auth_start..]
            .find(['/', '?', '#', ' ', ',', '"', '\'', '\n'])
            .map_or(value.len(), |i| auth_start + i);
        let authority = &value[auth_start..auth_end];
        let host_start = auth_start + authority.rfind('@').map_or(0, |i| i + 1);
        let host_end = value[host_start..auth_end]
            .find(':')
            .map_or(auth_end, |i| host_start + i);
        if host_start < host_end {
            spans.push((host_start, host_end));
        }
        from = auth_end.max(auth_start);
    }
    spans
}

fn is_port_suffix(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The port right after a host (`:6379`), and where it ends.
fn port_after(value: &str, end: usize) -> (Option<u16>, usize) {
    let Some(rest) = value[end..].strip_prefix(':') else {
        return (None, end);
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest[..digits].parse() {
        Ok(port) => (Some(port), end + 1 + digits),
        Err(_) => (None, end),
    }
}

/// The (name, namespace) a host name would denote if it is a Service.
fn service_of<'a>(host: &'a str, namespace: &'a str) -> Option<(&'a str, &'a str)> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && host.parse::<Ipv4Addr>().is_err();
    if !valid {
        return None;
    }
    let short = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    match short.split_once('.') {
        None => Some((short, namespace)),
        Some((name, ns)) if !ns.contains('.') && !name.is_empty() && !ns.is_empty() => {
            Some((name, ns))
        }
        Some(_) => None,
    }
}

/// The first IPv4 literal in `value` that is neither loopback nor
/// unspecified: a process given one could send traffic off this machine,
/// which the stand-in never allows.
pub fn foreign_ipv4(value: &str) -> Option<Ipv4Addr> {
    value
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|token| token.split('.').count() == 4)
        .filter_map(|token| token.parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(name: &str, ns: &str) -> Lookup {
        match (name, ns) {
            ("redis", "team") => Lookup::Ready(Target {
                ip: Ipv4Addr::new(127, 0, 0, 5),
                ports: vec![(6379, 6380)],
            }),
            ("ingest", "team") => Lookup::Ready(Target {
                ip: Ipv4Addr::new(127, 0, 0, 9),
                ports: vec![(80, 8000)],
            }),
            ("pending", "team") => Lookup::NotReady,
            _ => Lookup::NotAService,
        }
    }

    fn sub(value: &str) -> Result<String, Unready> {
        substitute(value, "team", &resolve)
    }

    #[test]
    fn every_service_name_form_in_a_url_becomes_the_pod_ip_and_target_port() {
        for host in [
            "redis",
            "redis.team",
            "redis.team.svc",
            "redis.team.svc.cluster.local",
        ] {
            assert_eq!(
                sub(&format!("redis://{host}:6379/0")).unwrap(),
                "redis://127.0.0.5:6380/0",
                "{host}"
            );
        }
    }

    #[test]
    fn userinfo_is_skipped_and_the_host_after_it_replaced() {
        assert_eq!(
            sub("redis://:s3cret@redis:6379").unwrap(),
            "redis://:s3cret@127.0.0.5:6380"
        );
        assert_eq!(
            sub("redis://redis:pw@redis.team.svc").unwrap(),
            "redis://redis:pw@127.0.0.5"
        );
    }

    #[test]
    fn whole_values_and_flag_values_are_host_positions() {
        assert_eq!(sub("redis").unwrap(), "127.0.0.5");
        assert_eq!(sub("redis:6379").unwrap(), "127.0.0.5:6380");
        assert_eq!(
            sub("--addr=ingest.team:80").unwrap(),
            "--addr=127.0.0.9:8000"
        );
        assert_eq!(sub("http://ingest/api").unwrap(), "http://127.0.0.9/api");
    }

    #[test]
    fn names_outside_host_positions_and_non_services_are_left_alone() {
        for value in [
            "redis is fast",
            "use-redis",
            "/data/redis",
            "redis://other:6379",
            "http://redis-0.redis.team.svc.cluster.local:6379",
            "redis://127.0.0.1:6379",
            "key=redis",
        ] {
            assert_eq!(sub(value).unwrap(), value);
        }
        // Another namespace's Service of the same name is another Service.
        assert_eq!(
            sub("redis://redis.prod:6379").unwrap(),
            "redis://redis.prod:6379"
        );
    }

    #[test]
    fn a_service_without_ready_pods_makes_the_process_wait() {
        assert_eq!(
            sub("redis://pending:6379"),
            Err(Unready("pending.team".into()))
        );
    }

    #[test]
    fn a_port_without_a_mapping_is_kept() {
        assert_eq!(sub("redis://redis:7000").unwrap(), "redis://127.0.0.5:7000");
    }

    #[test]
    fn foreign_addresses_are_detected_and_loopback_ones_allowed() {
        assert_eq!(
            foreign_ipv4("redis://10.96.0.12:6379"),
            Some(Ipv4Addr::new(10, 96, 0, 12))
        );
        assert_eq!(
            foreign_ipv4("--bind=192.168.1.1"),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        assert_eq!(foreign_ipv4("127.0.0.5:6379 0.0.0.0:8000"), None);
        assert_eq!(foreign_ipv4("version 1.2.3"), None);
    }
}
