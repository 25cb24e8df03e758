//! TLS of the client: `https://` in `--grpc` or `--http` selects it; the
//! server's certificate is verified against `--ca` (a PEM file of CA
//! certificates; only those are trusted) or, without it, the system store.
//! A certificate that does not verify is reported as such
//! ([`untrusted`]), with the hint to pass `--ca`.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::{Error, Result};

/// The `--ca` file's text, refused unless it holds at least one PEM
/// certificate and every one parses.
pub fn ca_pem(path: &Path) -> Result<Vec<u8>> {
    let bad = |why: String| Error::InvalidFlag(format!("--ca {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(pem)
}

/// The trusted roots: the `--ca` file's certificates, or the system store.
fn roots(ca: Option<&Path>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = ca_pem(path)?;
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                store.add(cert).map_err(|e| {
                    Error::InvalidFlag(format!(
                        "--ca {}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    Ok(store)
}

/// An HTTP client that verifies `https://` servers against `ca` (or the
/// system store).
pub fn http_client(ca: Option<&Path>) -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidFlag(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .map_err(|e| Error::InvalidFlag(format!("HTTP client: {e}")))
}

/// The gRPC channel's TLS: the `--ca` certificates, or the system store.
pub fn grpc_config(ca: Option<&Path>) -> Result<ClientTlsConfig> {
    Ok(match ca {
        Some(path) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem(path)?)),
        None => ClientTlsConfig::new().with_native_roots(),
    })
}

/// Whether `url` asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The verifier's complaint, when `error` (or one of its causes) is a
/// server certificate that did not verify.
pub fn untrusted(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if let Some(at) = text.find("invalid peer certificate") {
            return Some(text[at..].to_string());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_told_from_http_by_the_scheme() {
        assert!(is_https("https://127.0.0.1:50051"));
        assert!(is_https("HTTPS://h"));
        assert!(!is_https("http://127.0.0.1:50051"));
        assert!(!is_https("http"));
    }

    #[test]
    fn a_ca_file_that_is_missing_or_not_pem_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let m = ca_pem(&missing).unwrap_err().to_string();
        assert!(
            m.starts_with("--ca ") && m.contains("cannot read it"),
            "{m}"
        );
        let text = dir.path().join("ca.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let m = ca_pem(&text).unwrap_err().to_string();
        assert!(
            m.starts_with("--ca ") && m.contains("no PEM certificate"),
            "{m}"
        );
    }

    #[test]
    fn a_ca_file_with_a_certificate_is_taken() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        assert_eq!(roots(Some(&path)).unwrap().len(), 1);
        assert!(http_client(Some(&path)).is_ok());
        assert!(grpc_config(Some(&path)).is_ok());
    }

    #[test]
    fn an_untrusted_certificate_is_found_among_the_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "transport error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let found = untrusted(&Outer(inner)).unwrap();
        assert!(found.starts_with("invalid peer certificate"), "{found}");
        assert_eq!(untrusted(&std::io::Error::other("refused")), None);
    }
}
