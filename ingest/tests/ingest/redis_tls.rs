//! Redis over TLS with an ACL user: a real redis-server listening with
//! `--tls-port` only, its certificate signed by a CA made at test time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use telemetry_ingest::config::RedisArgs;
use telemetry_ingest::store::Store;

use crate::support::{
    Ingest, free_port, ingest_command, log_lines, packet, pipeline, serving, wait_for,
};

const USER: &str = "ingest";
const PASSWORD: &str = "s3cret-for-tests";

/// A redis-server reachable only over TLS, whose `default` user is off and
/// whose one user is [`USER`]; killed on drop.
struct TlsRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        write_certificates(dir.path());
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "port 0\nbind 127.0.0.1\ntls-port {port}\n\
             tls-cert-file {d}/server.pem\ntls-key-file {d}/server.key\n\
             tls-ca-cert-file {d}/ca.pem\ntls-auth-clients no\n\
             save \"\"\ndir {d}\n\
             user default off\nuser {USER} on >{PASSWORD} ~tp:* +@read +@write +@scripting +@connection +time\n"
        );
        std::fs::write(dir.path().join("redis.conf"), conf).unwrap();
        let child = Command::new(std::env::var("REDIS_SERVER").unwrap_or("redis-server".into()))
            .arg(dir.path().join("redis.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make test installs it)");
        let redis = TlsRedis { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = redis.client().get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server (TLS) did not start on port {port}");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client of the test's own: trusts the test CA, logs in as [`USER`].
    fn client(&self) -> redis::Client {
        let info = redis::IntoConnectionInfo::into_connection_info(
            format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{}", self.port).as_str(),
        )
        .unwrap();
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(self.ca_file()).unwrap()),
            },
        )
        .unwrap()
    }

    fn events(&self, pipeline: &str) -> u64 {
        let v: Option<u64> = redis::cmd("HGET")
            .arg(format!("tp:{{{pipeline}}}:stats"))
            .arg("events")
            .query(&mut self.client().get_connection().unwrap())
            .unwrap();
        v.unwrap_or(0)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ca.pem`, and `server.pem` / `server.key` for 127.0.0.1 and localhost
/// signed by it, in `dir`.
fn write_certificates(dir: &Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "telemetry test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

fn args(url: &str, username: &str, password: &str, ca_file: Option<&Path>) -> RedisArgs {
    RedisArgs {
        redis_url: url.to_string(),
        redis_password: Some(password.to_string()),
        redis_username: Some(username.to_string()),
        redis_ca_file: ca_file.map(Path::to_path_buf),
        redis_cluster_nodes: Vec::new(),
        redis_partitions: 1,
        redis_wait_replicas: 0,
    }
}

/// The error of a PING through a store opened with `args`.
async fn ping_error(args: &RedisArgs) -> String {
    let store = Store::open(args, "tls").unwrap();
    store.ping().await.unwrap_err().to_string()
}

#[tokio::test]
async fn events_are_stored_over_tls_as_an_acl_user_trusting_the_ca_file() {
    let redis = TlsRedis::start();
    let p = pipeline("tls-acl");
    let ca = redis.ca_file();
    let ingest = Ingest::start(
        &redis.url(),
        &p,
        &[
            &format!("--redis-ca-file={}", ca.display()),
            &format!("--redis-username={USER}"),
            &format!("--redis-password={PASSWORD}"),
        ],
    )
    .await;
    let packets = (0..50)
        .map(|i| packet(&format!("d-{}", i % 5), &format!("e-{i}")))
        .collect();
    let ack = ingest.stream(packets).await;
    assert_eq!((ack.accepted, ack.rejected), (50, 0));
    // Acknowledged means stored: read back over TLS, as the same ACL user.
    assert_eq!(redis.events(&p), 50);
    ingest.stop().await;
}

#[tokio::test]
async fn without_the_ca_the_certificate_is_refused_and_the_server_stays_up_not_ready() {
    let redis = TlsRedis::start();
    let e = ping_error(&args(&redis.url(), USER, PASSWORD, None)).await;
    assert!(
        e.to_lowercase().contains("certificate"),
        "a refused certificate is named: {e}"
    );

    // The binary with neither the CA file nor SSL_CERT_FILE: it serves,
    // answers 503 on /readyz and logs the certificate error.
    let p = pipeline("tls-no-ca");
    let mut ingest = spawn_ingest(&redis.url(), &p, &[], None).await;
    let line = wait_for(
        "the ping failure in the log",
        Duration::from_secs(10),
        || {
            let found = ingest
                .log
                .try_recv()
                .ok()
                .filter(|l| l.contains("redis ping failed"));
            async move { found }
        },
    )
    .await;
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    let readyz = reqwest::get(format!("http://{}/readyz", ingest.http))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(readyz.text().await.unwrap(), "redis unreachable");
    assert!(ingest.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test]
async fn the_system_store_is_trusted_through_ssl_cert_file() {
    let redis = TlsRedis::start();
    let p = pipeline("tls-ssl-cert-file");
    let ingest = spawn_ingest(&redis.url(), &p, &[], Some(&redis.ca_file())).await;
    let url = format!("http://{}/readyz", ingest.http);
    wait_for(
        "ready through SSL_CERT_FILE",
        Duration::from_secs(20),
        || async { matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_wrong_username_or_password_is_a_clear_auth_error() {
    let redis = TlsRedis::start();
    let ca = redis.ca_file();
    for (user, password) in [(USER, "wrong"), ("nobody", PASSWORD), ("default", PASSWORD)] {
        let e = ping_error(&args(&redis.url(), user, password, Some(&ca))).await;
        assert!(
            e.contains("WRONGPASS") || e.to_lowercase().contains("auth"),
            "{user}: {e}"
        );
    }
}

#[test]
fn a_ca_file_with_a_plain_redis_url_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    write_certificates(dir.path());
    let e = Store::open(
        &args(
            "redis://127.0.0.1:6379",
            USER,
            PASSWORD,
            Some(&dir.path().join("ca.pem")),
        ),
        "tls",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--redis-ca-file") && e.contains("rediss://"),
        "{e}"
    );
}

/// The binary, with the test user's credentials in its environment and
/// `SSL_CERT_FILE` set to `ssl_cert_file` (or pointing at no certificate).
struct Spawned {
    child: Child,
    _empty: tempfile::NamedTempFile,
    http: std::net::SocketAddr,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_ingest(
    url: &str,
    pipeline: &str,
    flags: &[&str],
    ssl_cert_file: Option<&Path>,
) -> Spawned {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let mut child = ingest_command("127.0.0.1:0", "127.0.0.1:0", url, pipeline, flags)
        .env("TELEMETRY_REDIS_USERNAME", USER)
        .env("TELEMETRY_REDIS_PASSWORD", PASSWORD)
        .env("SSL_CERT_FILE", ssl_cert_file.unwrap_or(empty.path()))
        .env_remove("SSL_CERT_DIR")
        .spawn()
        .unwrap();
    let mut log = log_lines(child.stdout.take().unwrap());
    let (_, http) = serving(&mut log).await;
    Spawned {
        child,
        _empty: empty,
        http,
        log,
    }
}
