//! TLS on the gRPC and HTTP listeners, with the certificate hot-reloaded.
//!
//! With `--tls-cert-file` and `--tls-key-file` both listeners serve TLS only
//! (ALPN `h2` on gRPC; `h2` and `http/1.1` on HTTP); without them, plain
//! text. The pair is loaded at startup (an unreadable or invalid pair is
//! fatal, the error names the file and the problem), then re-read every
//! `--config-poll-ms` like the aggregation config ([`watch_files`]): a new
//! valid pair is swapped into the [`Resolver`] that every new handshake asks
//! for its certificate, an invalid one is logged and counted and the old
//! pair stays. Open connections keep the session they have.
//!
//! A connection's TLS handshake runs on the accepted connection, inside its
//! place under `--max-connections` and its idle timeout, and must finish
//! within `--tls-handshake-timeout-seconds` ([`Tls::accept`]). The pair's
//! parsing and checks are pure ([`parse_pair`]); the file reads, the watcher
//! and the handshakes are the I/O around them.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Args;
use futures::{Stream, StreamExt};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::connection::{Gate, Guarded};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECONDS: u64 = 10;

/// ALPN protocols offered on the gRPC listener (gRPC is HTTP/2 only).
const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN protocols offered on the HTTP listener, preferred first.
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// TLS of both listeners.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (server certificate first) served on both the
    /// gRPC and the HTTP port, which then take TLS only; with
    /// `--tls-key-file`. Re-read every `--config-poll-ms`.
    #[arg(long, env = "TELEMETRY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of `--tls-cert-file` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TELEMETRY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Seconds a client has to complete the TLS handshake after connecting;
    /// the connection is closed after it.
    #[arg(long, env = "TELEMETRY_TLS_HANDSHAKE_TIMEOUT_SECONDS",
          default_value_t = DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tls_handshake_timeout_seconds: u64,
}

/// The certificate and key files, when TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsArgs {
    /// The two files, `None` for plain text; one without the other is
    /// refused naming both flags.
    pub fn files(&self) -> Result<Option<TlsFiles>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (Some(_), None) => Err(Error::Setting(
                "--tls-cert-file is set but --tls-key-file is not: TLS needs both \
                 (or neither, for plain text)"
                    .into(),
            )),
            (None, Some(_)) => Err(Error::Setting(
                "--tls-key-file is set but --tls-cert-file is not: TLS needs both \
                 (or neither, for plain text)"
                    .into(),
            )),
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_seconds)
    }
}

/// A certificate and key that belong together, ready to serve.
#[derive(Debug, Clone)]
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// The server certificate's notAfter, in unix seconds.
    pub not_after: i64,
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The pair from the two files' contents (pure): a PEM chain with at least
/// one certificate, a PEM private key, and the key being the certificate's.
/// `files` only names the files in errors.
pub fn parse_pair(cert_pem: &[u8], key_pem: &[u8], files: &TlsFiles) -> Result<Pair> {
    let cert_err =
        |why: String| Error::Setting(format!("--tls-cert-file {}: {why}", files.cert.display()));
    let key_err =
        |why: String| Error::Setting(format!("--tls-key-file {}: {why}", files.key.display()));
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate file: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| cert_err(format!("the first certificate cannot be read: {e}")))?;
    let not_after = parsed.validity().not_after.timestamp();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        key_err(format!(
            "holds no usable PEM private key (-----BEGIN PRIVATE KEY-----): {e}"
        ))
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => key_err(format!(
            "the key does not match the certificate in --tls-cert-file {} \
             (they are not one pair)",
            files.cert.display()
        )),
        other => key_err(format!("not a usable private key: {other}")),
    })?;
    Ok(Pair {
        key: Arc::new(certified),
        not_after,
    })
}

/// Both files' contents, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

async fn read_files(files: &TlsFiles) -> Result<Contents> {
    let read = |path: PathBuf, flag: &'static str| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|e| Error::Setting(format!("{flag} {}: cannot read it: {e}", path.display())))
    };
    Ok(Contents {
        cert: read(files.cert.clone(), "--tls-cert-file").await?,
        key: read(files.key.clone(), "--tls-key-file").await?,
    })
}

/// Serves the current certificate to every handshake; [`Resolver::set`]
/// replaces it for the handshakes that follow.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    pub fn new(key: Arc<CertifiedKey>) -> Resolver {
        Resolver {
            current: RwLock::new(key),
        }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS metrics, registered only when TLS is on (an expiry of 0 would
/// read as expired).
#[derive(Debug, Clone)]
struct TlsMetrics {
    reloads: IntCounterVec,
    expiry: IntGauge,
    handshake_failures: IntCounterVec,
}

impl TlsMetrics {
    fn register(metrics: &Metrics) -> TlsMetrics {
        TlsMetrics {
            reloads: metrics.register(
                IntCounterVec::new(
                    Opts::new(
                        "telemetry_ingest_tls_reloads_total",
                        "Changes of the TLS certificate or key file seen, by result \
                         (ok: now served; invalid: refused, the previous pair is still served).",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            expiry: metrics.register(
                IntGauge::new(
                    "telemetry_ingest_tls_certificate_expiry_timestamp_seconds",
                    "notAfter of the served TLS certificate, in unix seconds.",
                )
                .expect("valid metric"),
            ),
            handshake_failures: metrics.register(
                IntCounterVec::new(
                    Opts::new(
                        "telemetry_ingest_tls_handshake_failures_total",
                        "TLS handshakes that failed or timed out, by listener.",
                    ),
                    &["listener"],
                )
                .expect("valid metric"),
            ),
        }
    }

    fn handshake_failed(&self, listener: &str) -> IntCounter {
        self.handshake_failures.with_label_values(&[listener])
    }
}

/// TLS of the server: the files, the resolver both listeners share, and
/// an acceptor per listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    files: TlsFiles,
    loaded: Contents,
    resolver: Arc<Resolver>,
    metrics: TlsMetrics,
    pub grpc: Tls,
    pub http: Tls,
}

/// The handshake side of one listener.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    timeout: Duration,
    listener: &'static str,
    failures: IntCounter,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("listener", &self.listener)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ServerTls {
    /// Loads the pair when TLS is configured; `None` for plain text.
    pub async fn load(args: &TlsArgs, metrics: &Metrics) -> Result<Option<ServerTls>> {
        let Some(files) = args.files()? else {
            return Ok(None);
        };
        let loaded = read_files(&files).await?;
        let pair = parse_pair(&loaded.cert, &loaded.key, &files)?;
        let metrics = TlsMetrics::register(metrics);
        metrics.expiry.set(pair.not_after);
        let resolver = Arc::new(Resolver::new(pair.key));
        let acceptor = |alpn: &[&[u8]]| -> Result<TlsAcceptor> {
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Setting(format!("TLS protocol versions: {e}")))?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        let tls = |alpn, listener| -> Result<Tls> {
            Ok(Tls {
                acceptor: acceptor(alpn)?,
                timeout: args.handshake_timeout(),
                listener,
                failures: metrics.handshake_failed(listener),
            })
        };
        let (grpc, http) = (tls(GRPC_ALPN, "grpc")?, tls(HTTP_ALPN, "http")?);
        tracing::info!(cert = %files.cert.display(), not_after = pair.not_after, "TLS on both listeners");
        Ok(Some(ServerTls {
            files,
            loaded,
            resolver,
            metrics,
            grpc,
            http,
        }))
    }

    /// Re-reads the files every `interval` until `stop`, serving each new
    /// valid pair from the next handshake on.
    pub async fn watch_files(self, interval: Duration, stop: CancellationToken) {
        let mut last = self.loaded.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = match read_files(&self.files).await {
                Ok(now) => now,
                Err(error) => {
                    // A Secret volume swaps its files in one step, so an
                    // unreadable file is gone, not half-written.
                    tracing::warn!(%error, "cannot read the TLS files; serving the current certificate");
                    continue;
                }
            };
            if now == last {
                continue;
            }
            match parse_pair(&now.cert, &now.key, &self.files) {
                Ok(pair) => {
                    self.resolver.set(pair.key);
                    self.metrics.expiry.set(pair.not_after);
                    self.metrics.reloads.with_label_values(&["ok"]).inc();
                    tracing::info!(cert = %self.files.cert.display(), not_after = pair.not_after,
                        "TLS certificate reloaded");
                }
                Err(error) => {
                    self.metrics.reloads.with_label_values(&["invalid"]).inc();
                    tracing::error!(%error, "invalid TLS certificate or key; serving the previous one");
                }
            }
            last = now;
        }
    }
}

impl Tls {
    /// The TLS handshake on an accepted connection, within the handshake
    /// timeout (the connection keeps its place under the limit meanwhile).
    pub async fn accept(&self, io: Guarded) -> io::Result<TlsStream<Guarded>> {
        let done = tokio::time::timeout(self.timeout, self.acceptor.accept(io)).await;
        let result = done.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TLS handshake not done in {:?} (--tls-handshake-timeout-seconds)",
                    self.timeout
                ),
            ))
        });
        if let Err(error) = &result {
            self.failures.inc();
            tracing::debug!(listener = self.listener, %error, "TLS handshake failed");
        }
        result
    }
}

/// An accepted connection, plain or TLS.
#[derive(Debug)]
pub enum MaybeTls {
    Plain(Guarded),
    Tls(Box<TlsStream<Guarded>>),
}

/// The connections of `gate` as tonic takes them: plain, or each through
/// its handshake (run concurrently, so a slow one holds up no other).
pub fn incoming(
    gate: Gate,
    tls: Option<Tls>,
) -> impl Stream<Item = io::Result<MaybeTls>> + Send + 'static {
    let Some(tls) = tls else {
        return gate
            .incoming()
            .map(|io| io.map(MaybeTls::Plain))
            .left_stream();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<MaybeTls>>(64);
    tokio::spawn(async move {
        loop {
            let (io, _) = tokio::select! {
                _ = tx.closed() => return,
                accepted = gate.accept() => accepted,
            };
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                if let Ok(stream) = tls.accept(io).await {
                    let _ = tx.send(Ok(MaybeTls::Tls(Box::new(stream)))).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).right_stream()
}

impl MaybeTls {
    fn guarded(&self) -> &Guarded {
        match self {
            MaybeTls::Plain(io) => io,
            MaybeTls::Tls(io) => io.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for MaybeTls {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.guarded().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn files() -> TlsFiles {
        TlsFiles {
            cert: "/tls/tls.crt".into(),
            key: "/tls/tls.key".into(),
        }
    }

    /// A self-signed certificate for `name`, and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn one_file_without_the_other_is_refused_naming_both_flags() {
        let args = |cert: Option<&str>, key: Option<&str>| TlsArgs {
            tls_cert_file: cert.map(PathBuf::from),
            tls_key_file: key.map(PathBuf::from),
            tls_handshake_timeout_seconds: DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECONDS,
        };
        assert_eq!(args(None, None).files().unwrap(), None);
        assert_eq!(
            args(Some("/c"), Some("/k")).files().unwrap().unwrap().key,
            PathBuf::from("/k")
        );
        for m in [
            args(Some("/c"), None).files().unwrap_err().to_string(),
            args(None, Some("/k")).files().unwrap_err().to_string(),
        ] {
            assert!(
                m.contains("--tls-cert-file") && m.contains("--tls-key-file") && m.contains("both"),
                "{m}"
            );
        }
    }

    #[test]
    fn a_matching_pair_loads_with_its_expiry() {
        let (cert, key) = pair("localhost");
        let loaded = parse_pair(cert.as_bytes(), key.as_bytes(), &files()).unwrap();
        let der = cert_der(&cert);
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert_eq!(loaded.not_after, parsed.validity().not_after.timestamp());
        assert!(loaded.not_after > 1_700_000_000, "{}", loaded.not_after);
    }

    fn cert_der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_certificate_file_that_is_not_pem_is_refused_naming_the_file() {
        let (_, key) = pair("localhost");
        let m = parse_pair(b"not a certificate\n", key.as_bytes(), &files())
            .unwrap_err()
            .to_string();
        assert!(
            m.starts_with("--tls-cert-file /tls/tls.crt: ") && m.contains("no PEM certificate"),
            "{m}"
        );
        let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let m = parse_pair(broken.as_bytes(), key.as_bytes(), &files())
            .unwrap_err()
            .to_string();
        assert!(m.starts_with("--tls-cert-file /tls/tls.crt: "), "{m}");
    }

    #[test]
    fn a_key_file_without_a_key_is_refused_naming_the_file() {
        let (cert, _) = pair("localhost");
        let m = parse_pair(cert.as_bytes(), cert.as_bytes(), &files())
            .unwrap_err()
            .to_string();
        assert!(
            m.starts_with("--tls-key-file /tls/tls.key: ")
                && m.contains("no usable PEM private key"),
            "{m}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let (cert, _) = pair("localhost");
        let (_, other_key) = pair("localhost");
        let m = parse_pair(cert.as_bytes(), other_key.as_bytes(), &files())
            .unwrap_err()
            .to_string();
        assert!(
            m.starts_with("--tls-key-file /tls/tls.key: ")
                && m.contains("does not match the certificate in --tls-cert-file /tls/tls.crt"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn a_missing_file_at_startup_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let args = TlsArgs {
            tls_cert_file: Some(dir.path().join("missing.crt")),
            tls_key_file: Some(dir.path().join("missing.key")),
            tls_handshake_timeout_seconds: 1,
        };
        let m = ServerTls::load(&args, &Metrics::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            m.starts_with("--tls-cert-file ") && m.contains("missing.crt: cannot read it"),
            "{m}"
        );
    }

    #[test]
    fn the_resolver_serves_the_pair_last_set() {
        let (cert_a, key_a) = pair("a.example");
        let (cert_b, key_b) = pair("b.example");
        let a = parse_pair(cert_a.as_bytes(), key_a.as_bytes(), &files()).unwrap();
        let b = parse_pair(cert_b.as_bytes(), key_b.as_bytes(), &files()).unwrap();
        let resolver = Resolver::new(a.key.clone());
        assert_eq!(leaf(&resolver.current()), leaf(&a.key));
        resolver.set(b.key.clone());
        assert_eq!(leaf(&resolver.current()), leaf(&b.key));
        assert_ne!(leaf(&a.key), leaf(&b.key));
    }
}
