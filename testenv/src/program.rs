//! Which local program a container runs, and how it is confined to its pod's
//! loopback address.
//!
//! The stand-in never runs arbitrary images: the project's own images map to
//! the binaries the workspace builds, and `redis` to the `redis-server` on
//! PATH. Everything else is refused.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::ContainerPort;

/// A program the stand-in knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `telemetry-ingest`, from the workspace's build.
    Ingest,
    /// `telemetry-operator`, from the workspace's build.
    Operator,
    /// `redis-server`, from PATH.
    Redis,
}

/// Why a container cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The image is not one of ours (reported as `ImageNotSupported`).
    Image(String),
    /// The image is ours but `command` names some other program.
    Command(String),
}

impl Refusal {
    /// The container's waiting reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Image(_) => "ImageNotSupported",
            Refusal::Command(_) => "CommandNotSupported",
        }
    }

    /// A message for the container status.
    pub fn message(&self) -> String {
        match self {
            Refusal::Image(image) => format!(
                "telemetry-kubelet runs only telemetry-ingest, telemetry-operator and redis images, not {image:?}"
            ),
            Refusal::Command(cmd) => format!(
                "telemetry-kubelet runs only redis-server, telemetry-ingest and telemetry-operator, not command {cmd:?}"
            ),
        }
    }
}

/// The program a container runs and its argument list (the rest of `command`
/// followed by `args`), before any expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: Program,
    pub args: Vec<String>,
}

impl Program {
    /// The executable's file name.
    pub fn binary_name(self) -> &'static str {
        match self {
            Program::Ingest => "telemetry-ingest",
            Program::Operator => "telemetry-operator",
            Program::Redis => "redis-server",
        }
    }

    fn from_name(name: &str) -> Option<Program> {
        match name {
            "telemetry-ingest" => Some(Program::Ingest),
            "telemetry-operator" => Some(Program::Operator),
            "redis" | "redis-server" => Some(Program::Redis),
            _ => None,
        }
    }
}

/// The last path segment of an image reference's repository, without tag or
/// digest: `ghcr.io/acme/telemetry-ingest:1.2@sha256:..` → `telemetry-ingest`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// Decides what a container runs. A `command` whose first element is one of
/// our program names decides; otherwise the image does.
pub fn launch(
    image: Option<&str>,
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Result<Launch, Refusal> {
    let args = args.unwrap_or_default();
    if let Some((first, rest)) = command.and_then(|c| c.split_first()) {
        let base = first.rsplit('/').next().unwrap_or(first);
        return match Program::from_name(base).filter(|_| base != "redis") {
            Some(program) => Ok(Launch {
                program,
                args: rest.iter().chain(args).cloned().collect(),
            }),
            None => {
                let image = image.unwrap_or_default();
                match Program::from_name(image_name(image)) {
                    Some(_) => Err(Refusal::Command(first.clone())),
                    None => Err(Refusal::Image(image.to_owned())),
                }
            }
        };
    }
    let image = image.unwrap_or_default();
    let program =
        Program::from_name(image_name(image)).ok_or_else(|| Refusal::Image(image.to_owned()))?;
    Ok(Launch {
        program,
        args: args.to_vec(),
    })
}

/// The port of the container port called `name`, or `default`.
pub fn named_port(ports: &[ContainerPort], name: &str, default: u16) -> u16 {
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(default)
}

/// Confines a program to the pod's address, overriding what the pod says:
/// every pod gets the same container ports, so only distinct addresses keep
/// them from colliding.
pub fn confine(
    program: Program,
    ip: Ipv4Addr,
    ports: &[ContainerPort],
    args: &mut Vec<String>,
    env: &mut Vec<(String, String)>,
) {
    let mut set = |name: &str, value: String| {
        env.retain(|(n, _)| n != name);
        env.push((name.to_owned(), value));
    };
    match program {
        Program::Ingest => {
            set(
                "TELEMETRY_GRPC_LISTEN",
                format!("{ip}:{}", named_port(ports, "grpc", 50051)),
            );
            set(
                "TELEMETRY_HTTP_LISTEN",
                format!("{ip}:{}", named_port(ports, "http", 8000)),
            );
            // Flags win over env in clap; drop any the pod passes.
            strip_flag(args, "--grpc-listen");
            strip_flag(args, "--http-listen");
        }
        Program::Operator => {
            set(
                "TELEMETRY_OPERATOR_HTTP_LISTEN",
                format!("{ip}:{}", named_port(ports, "http", 8080)),
            );
            strip_flag(args, "--http-listen");
        }
        Program::Redis => {
            if !args.iter().any(|a| a == "--port") {
                args.push("--port".into());
                args.push(named_port(ports, "redis", 6379).to_string());
            }
            // Later directives win in redis-server, so this overrides a
            // `bind` in a config file or earlier in the arguments.
            args.push("--bind".into());
            args.push(ip.to_string());
        }
    }
}

/// Removes `--flag value` and `--flag=value` from an argument list.
fn strip_flag(args: &mut Vec<String>, flag: &str) {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.drain(..);
    while let Some(arg) = iter.next() {
        if arg == flag {
            iter.next();
        } else if !arg
            .strip_prefix(flag)
            .is_some_and(|rest| rest.starts_with('='))
        {
            out.push(arg);
        }
    }
    drop(iter);
    *args = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn port(name: &str, port: i32) -> ContainerPort {
        ContainerPort {
            name: Some(name.into()),
            container_port: port,
            ..Default::default()
        }
    }

    #[test]
    fn image_name_ignores_registry_tag_and_digest() {
        assert_eq!(image_name("redis"), "redis");
        assert_eq!(image_name("redis:7.2-alpine"), "redis");
        assert_eq!(
            image_name("localhost:5000/acme/telemetry-ingest:v1"),
            "telemetry-ingest"
        );
        assert_eq!(
            image_name("ghcr.io/acme/telemetry-operator:1@sha256:abcd"),
            "telemetry-operator"
        );
    }

    #[test]
    fn images_map_to_our_programs_and_others_are_refused() {
        let l = launch(
            Some("ghcr.io/x/telemetry-ingest:dev"),
            None,
            Some(&strings(&["--pipeline", "p"])),
        )
        .unwrap();
        assert_eq!(l.program, Program::Ingest);
        assert_eq!(l.args, strings(&["--pipeline", "p"]));
        assert_eq!(
            launch(Some("docker.io/library/redis:7"), None, None)
                .unwrap()
                .program,
            Program::Redis
        );
        assert_eq!(
            launch(Some("nginx:1.27"), None, None),
            Err(Refusal::Image("nginx:1.27".into()))
        );
        assert_eq!(
            launch(Some("nginx"), None, None).unwrap_err().reason(),
            "ImageNotSupported"
        );
    }

    #[test]
    fn a_command_naming_our_program_decides_and_prefixes_the_args() {
        let cmd = strings(&["/usr/local/bin/redis-server", "/etc/redis/redis.conf"]);
        let l = launch(
            Some("bitnami/valkey"),
            Some(&cmd),
            Some(&strings(&["--appendonly", "yes"])),
        )
        .unwrap();
        assert_eq!(l.program, Program::Redis);
        assert_eq!(
            l.args,
            strings(&["/etc/redis/redis.conf", "--appendonly", "yes"])
        );
    }

    #[test]
    fn a_foreign_command_in_our_image_is_refused() {
        let cmd = strings(&["sh", "-c", "redis-server"]);
        assert_eq!(
            launch(Some("redis:7"), Some(&cmd), None),
            Err(Refusal::Command("sh".into()))
        );
        assert_eq!(
            launch(Some("busybox"), Some(&cmd), None)
                .unwrap_err()
                .reason(),
            "ImageNotSupported"
        );
    }

    #[test]
    fn ingest_listens_on_the_pod_ip_with_named_ports() {
        let ip = Ipv4Addr::new(127, 0, 0, 7);
        let mut args = strings(&[
            "--http-listen",
            "0.0.0.0:9",
            "--grpc-listen=0.0.0.0:1",
            "--pipeline",
            "p",
        ]);
        let mut env = vec![(
            "TELEMETRY_HTTP_LISTEN".to_string(),
            "0.0.0.0:8000".to_string(),
        )];
        confine(
            Program::Ingest,
            ip,
            &[port("http", 8001)],
            &mut args,
            &mut env,
        );
        assert_eq!(args, strings(&["--pipeline", "p"]));
        assert!(env.contains(&("TELEMETRY_HTTP_LISTEN".into(), "127.0.0.7:8001".into())));
        assert!(env.contains(&("TELEMETRY_GRPC_LISTEN".into(), "127.0.0.7:50051".into())));
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn operator_listens_on_the_pod_ip() {
        let mut args = vec![];
        let mut env = vec![];
        confine(
            Program::Operator,
            Ipv4Addr::new(127, 0, 0, 9),
            &[],
            &mut args,
            &mut env,
        );
        assert_eq!(
            env,
            vec![(
                "TELEMETRY_OPERATOR_HTTP_LISTEN".to_string(),
                "127.0.0.9:8080".to_string()
            )]
        );
    }

    #[test]
    fn redis_binds_the_pod_ip_and_keeps_its_port() {
        let ip = Ipv4Addr::new(127, 0, 0, 3);
        let mut args = strings(&["--port", "7000"]);
        confine(Program::Redis, ip, &[], &mut args, &mut vec![]);
        assert_eq!(args, strings(&["--port", "7000", "--bind", "127.0.0.3"]));
        let mut args = vec![];
        confine(
            Program::Redis,
            ip,
            &[port("redis", 6380)],
            &mut args,
            &mut vec![],
        );
        assert_eq!(args, strings(&["--port", "6380", "--bind", "127.0.0.3"]));
    }
}
