//! Readiness, liveness and startup probes against the real process on its
//! pod IP: `httpGet` (plain HTTP/1.1 GET, 200-399 is success), `tcpSocket`
//! (connect), `grpc` (approximated by a connect), and `exec` (a local
//! command from a short allow-list, after Service substitution).
//!
//! A probe's `host` is ignored: the probe always dials the pod's own
//! loopback address, never anything outside 127.0.0.0/8.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::substitute::foreign_ipv4;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `https`: scheme HTTPS, the certificate not verified.
    Http {
        port: u16,
        path: String,
        https: bool,
    },
    Tcp {
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

/// A probe with its timing, in the kubelet's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Resolves a port given by number or by container port name.
pub fn port(port: &IntOrString, ports: &[ContainerPort]) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

impl Spec {
    /// The probe, or `None` when it has no action we understand.
    pub fn from_probe(probe: &Probe, ports: &[ContainerPort]) -> Option<Spec> {
        let action = if let Some(get) = &probe.http_get {
            Action::Http {
                port: port(&get.port, ports)?,
                path: get.path.clone().unwrap_or_else(|| "/".into()),
                https: get.scheme.as_deref() == Some("HTTPS"),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            Action::Tcp {
                port: port(&tcp.port, ports)?,
            }
        } else if let Some(grpc) = &probe.grpc {
            Action::Tcp {
                port: u16::try_from(grpc.port).ok()?,
            }
        } else if let Some(exec) = &probe.exec {
            Action::Exec {
                command: exec.command.clone().unwrap_or_default(),
            }
        } else {
            return None;
        };
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Some(Spec {
            action,
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        })
    }
}

/// The result of a probe over time: it flips only after `threshold`
/// consecutive outcomes the other way.
#[derive(Debug, Clone)]
pub struct Streak {
    pub passing: bool,
    successes: u32,
    failures: u32,
}

impl Streak {
    pub fn new(passing: bool) -> Self {
        Streak {
            passing,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one outcome and returns the (possibly new) state.
    pub fn record(&mut self, ok: bool, spec: &Spec) -> bool {
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= spec.success_threshold {
                self.passing = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= spec.failure_threshold {
                self.passing = false;
            }
        }
        self.passing
    }

    /// Failed `failureThreshold` times in a row.
    pub fn failed(&self, spec: &Spec) -> bool {
        self.failures >= spec.failure_threshold
    }
}

/// Programs an exec probe or preStop hook may run: enough for the health
/// checks of our images, nothing that could reach off the machine.
const EXEC_ALLOWED: &[&str] = &[
    "redis-cli",
    "true",
    "false",
    "test",
    "[",
    "cat",
    "grep",
    "ls",
    "sleep",
    "echo",
    "telemetryctl",
];

/// Adapts an exec command to run on the host: `redis-cli` without `-h` would
/// dial 127.0.0.1 (in a container, localhost is the pod), so it gets the pod
/// IP; `localhost`/`127.0.0.1` hosts become the pod IP. Refuses programs
/// outside the allow-list and any non-loopback address.
pub fn localize_exec(command: &[String], pod_ip: Ipv4Addr) -> Result<Vec<String>, String> {
    let (first, rest) = command.split_first().ok_or("empty exec command")?;
    let base = first.rsplit('/').next().unwrap_or(first);
    let ip = pod_ip.to_string();
    let fix = |s: &str| s.replace("localhost", &ip).replace("127.0.0.1", &ip);
    if let Some(addr) = command.iter().find_map(|c| foreign_ipv4(c)) {
        return Err(format!("exec command names non-loopback address {addr}"));
    }
    if matches!(base, "sh" | "bash") {
        let pos = rest
            .iter()
            .position(|a| a == "-c")
            .ok_or("shell exec without -c")?;
        let script = rest.get(pos + 1).ok_or("shell exec without a script")?;
        for segment in script.split(['|', ';', '&', '\n']) {
            let word = segment.split_whitespace().next().unwrap_or("true");
            let word = word.rsplit('/').next().unwrap_or(word);
            if !EXEC_ALLOWED.contains(&word) {
                return Err(format!("exec command {word:?} is not allowed"));
            }
        }
        let script = fix(script);
        let script = if script.contains("redis-cli") && !script.contains(" -h ") {
            script.replace("redis-cli", &format!("redis-cli -h {ip}"))
        } else {
            script
        };
        // `rest` starts at command[1]: the script is command[pos + 2].
        let mut out: Vec<String> = command[..pos + 3].to_vec();
        out[pos + 2] = script;
        out.extend(command[pos + 3..].iter().cloned());
        return Ok(out);
    }
    if !EXEC_ALLOWED.contains(&base) {
        return Err(format!("exec command {base:?} is not allowed"));
    }
    let mut out = vec![first.clone()];
    if base == "redis-cli" && !rest.iter().any(|a| a == "-h") {
        out.push("-h".into());
        out.push(ip.clone());
    }
    out.extend(rest.iter().map(|a| fix(a)));
    Ok(out)
}

/// Runs a probe action once against the pod.
pub async fn run(
    action: &Action,
    ip: Ipv4Addr,
    env: &[(String, String)],
    timeout: Duration,
) -> bool {
    let attempt = async {
        match action {
            Action::Http {
                port,
                path,
                https: false,
            } => http_get(ip, *port, path).await,
            Action::Http {
                port,
                path,
                https: true,
            } => https_get(ip, *port, path).await,
            Action::Tcp { port } => tokio::net::TcpStream::connect((ip, *port)).await.is_ok(),
            Action::Exec { command } => exec(command, ip, env).await,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect((ip, port)).await else {
        return false;
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/telemetry-kubelet\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    status_ok(&head[..len])
}

/// `GET https://ip:port/path` without verifying the certificate (the
/// kubelet does not verify its probes' either); 2xx and 3xx pass.
async fn https_get(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("kube-probe/telemetry-kubelet")
        .build()
    else {
        return false;
    };
    let path = path.trim_start_matches('/');
    client
        .get(format!("https://{ip}:{port}/{path}"))
        .send()
        .await
        .is_ok_and(|r| (200..400).contains(&r.status().as_u16()))
}

/// Whether an HTTP response starts with a 2xx or 3xx status line.
fn status_ok(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.split_whitespace();
    parts.next().is_some_and(|v| v.starts_with("HTTP/"))
        && parts
            .next()
            .and_then(|code| code.parse::<u16>().ok())
            .is_some_and(|code| (200..400).contains(&code))
}

async fn exec(command: &[String], ip: Ipv4Addr, env: &[(String, String)]) -> bool {
    let Ok(command) = localize_exec(command, ip) else {
        return false;
    };
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    matches!(cmd.status().await, Ok(status) if status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn probes_resolve_named_ports_and_default_timings() {
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2
        }))
        .unwrap();
        let ports = [ContainerPort {
            name: Some("http".into()),
            container_port: 8000,
            ..Default::default()
        }];
        let spec = Spec::from_probe(&probe, &ports).unwrap();
        assert_eq!(
            spec.action,
            Action::Http {
                port: 8000,
                path: "/readyz".into(),
                https: false,
            }
        );
        assert_eq!(spec.period, Duration::from_secs(2));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
    }

    #[test]
    fn a_streak_flips_only_after_its_threshold() {
        let spec = Spec {
            action: Action::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 2,
        };
        let mut t = Streak::new(false);
        assert!(t.record(true, &spec));
        assert!(t.record(false, &spec));
        assert!(!t.record(false, &spec));
        assert!(t.record(true, &spec));
    }

    #[test]
    fn redis_cli_is_pointed_at_the_pod_ip() {
        let ip = Ipv4Addr::new(127, 0, 0, 8);
        assert_eq!(
            localize_exec(&strings(&["redis-cli", "ping"]), ip).unwrap(),
            strings(&["redis-cli", "-h", "127.0.0.8", "ping"])
        );
        assert_eq!(
            localize_exec(&strings(&["redis-cli", "-h", "localhost", "ping"]), ip).unwrap(),
            strings(&["redis-cli", "-h", "127.0.0.8", "ping"])
        );
        assert_eq!(
            localize_exec(&strings(&["sh", "-c", "redis-cli ping | grep PONG"]), ip).unwrap(),
            strings(&["sh", "-c", "redis-cli -h 127.0.0.8 ping | grep PONG"])
        );
    }

    #[test]
    fn exec_refuses_unknown_programs_and_foreign_addresses() {
        let ip = Ipv4Addr::new(127, 0, 0, 8);
        assert!(localize_exec(&strings(&["curl", "http://x"]), ip).is_err());
        assert!(
            localize_exec(&strings(&["sh", "-c", "redis-cli ping; wget http://x"]), ip).is_err()
        );
        assert!(localize_exec(&strings(&["redis-cli", "-h", "10.0.0.1", "ping"]), ip).is_err());
        assert!(localize_exec(&[], ip).is_err());
    }

    #[test]
    fn http_status_lines_2xx_and_3xx_pass() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.0 302 Found"));
        assert!(!status_ok(b"HTTP/1.1 503 Service Unavailable"));
        assert!(!status_ok(b"garbage"));
    }

    #[tokio::test]
    async fn http_and_tcp_probes_reach_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /readyz ");
                let reply: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    b"HTTP/1.1 404 NF\r\n\r\n"
                };
                let _ = s.write_all(reply).await;
            }
        });
        let ip = Ipv4Addr::LOCALHOST;
        let t = Duration::from_secs(2);
        assert!(
            run(
                &Action::Http {
                    port,
                    path: "/readyz".into(),
                    https: false,
                },
                ip,
                &[],
                t
            )
            .await
        );
        assert!(
            !run(
                &Action::Http {
                    port,
                    path: "/other".into(),
                    https: false,
                },
                ip,
                &[],
                t
            )
            .await
        );
        assert!(run(&Action::Tcp { port }, ip, &[], t).await);
        let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        assert!(
            run(
                &Action::Exec {
                    command: strings(&["true"])
                },
                ip,
                &env,
                t
            )
            .await
        );
        assert!(
            !run(
                &Action::Exec {
                    command: strings(&["false"])
                },
                ip,
                &env,
                t
            )
            .await
        );
    }
}
