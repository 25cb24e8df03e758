//! The trust of a `rediss://` connection: the system store plus the CA file
//! of `--redis-ca-file`, checked at startup so that a wrong file is an error
//! naming the flag rather than a refused handshake later.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use redis::{ConnectionAddr, ConnectionInfo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// The PEM bundle to hand to redis-rs as its roots (it replaces the system
/// store with them, so the system certificates are put in it too), or `None`
/// when no CA file is given and redis-rs' own system store is enough.
pub fn roots(info: &ConnectionInfo, ca_file: Option<&Path>) -> Result<Option<Vec<u8>>> {
    let Some(path) = ca_file else {
        return Ok(None);
    };
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(Error::Setting(format!(
            "--redis-ca-file {} is given but --redis-url is not a rediss:// (TLS) URL; \
             use rediss://, or drop the CA file",
            path.display()
        )));
    }
    let pem = ca_pem(path)?;
    let mut bundle = system_pem();
    bundle.extend_from_slice(&pem);
    Ok(Some(bundle))
}

/// The CA file's text, refused unless it holds at least one certificate and
/// every PEM certificate in it parses.
pub fn ca_pem(path: &Path) -> Result<Vec<u8>> {
    let bad = |why: String| Error::Setting(format!("--redis-ca-file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    let (_, unusable) = store.add_parsable_certificates(certs);
    if unusable > 0 {
        return Err(bad(format!(
            "{unusable} certificate(s) in it are not usable trust anchors"
        )));
    }
    Ok(pem)
}

/// The system store as PEM (the files `SSL_CERT_FILE` / `SSL_CERT_DIR` or
/// the distribution's bundle name); unreadable entries are left out, as
/// they would be of any store.
fn system_pem() -> Vec<u8> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "a system CA certificate could not be loaded");
    }
    let mut out = Vec::new();
    for cert in found.certs {
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::IntoConnectionInfo;

    fn info(url: &str) -> ConnectionInfo {
        url.into_connection_info().unwrap()
    }

    #[test]
    fn no_ca_file_leaves_the_system_store_to_redis_rs() {
        assert!(roots(&info("rediss://r:6380"), None).unwrap().is_none());
    }

    #[test]
    fn a_ca_file_with_a_plain_url_is_refused_naming_both_flags() {
        let e = roots(&info("redis://r:6379"), Some(Path::new("/x/ca.pem"))).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("--redis-ca-file /x/ca.pem") && m.contains("--redis-url"),
            "{m}"
        );
    }

    #[test]
    fn a_missing_or_non_pem_ca_file_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let m = roots(&info("rediss://r:6380"), Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            m.starts_with("--redis-ca-file") && m.contains("cannot read"),
            "{m}"
        );

        let text = dir.path().join("ca.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let m = roots(&info("rediss://r:6380"), Some(&text))
            .unwrap_err()
            .to_string();
        assert!(
            m.starts_with("--redis-ca-file") && m.contains("no PEM certificate"),
            "{m}"
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let m = roots(&info("rediss://r:6380"), Some(&broken))
            .unwrap_err()
            .to_string();
        assert!(m.starts_with("--redis-ca-file"), "{m}");
    }
}
