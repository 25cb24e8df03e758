//! The control plane's credentials, made at `up`: a CA, the apiserver's
//! serving certificate, an admin client certificate, the ServiceAccount
//! token signing key, and static bearer tokens (an admin, and a user with no
//! RBAC grants at all, to check that authorisation really denies).
//!
//! ```text
//! <state>/pki/ca.crt ca.key                 the cluster CA (also signs CSRs)
//! <state>/pki/apiserver.crt apiserver.key   serving: 127.0.0.1, localhost, kubernetes.default.svc…
//! <state>/pki/admin.crt admin.key           client: O=system:masters
//! <state>/pki/sa.key sa.pub                 ServiceAccount token signing
//! <state>/pki/tokens.csv                    token,user,uid[,"groups"]
//! ```
//!
//! Keys are ECDSA P-256, which the apiserver, the controller-manager and
//! kube-rs's rustls all accept.

use std::io::Read;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// The admin user of the static token file (group `system:masters`).
pub const ADMIN: &str = "testenv-admin";
/// A user with no RBAC grants.
pub const NOBODY: &str = "testenv-nobody";

/// Names the apiserver's certificate is valid for.
const APISERVER_NAMES: [&str; 5] = [
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
];

/// The files of a PKI directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes every credential (overwriting what is there).
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io("creating pki directory", &self.dir))?;
        let cert_err =
            |what: &'static str| move |e: rcgen::Error| Error::Invalid(format!("{what}: {e}"));

        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA"))?;
        ca.distinguished_name
            .push(DnType::CommonName, "telemetry-testenv-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(cert_err("CA key"))?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(cert_err("CA"))?;

        // rustls (kube-rs) checks the IP SAN and refuses a CA certificate as
        // a server certificate, hence a separate leaf.
        let mut server = CertificateParams::new(APISERVER_NAMES.map(String::from).to_vec())
            .map_err(cert_err("apiserver certificate"))?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(cert_err("apiserver key"))?;
        let server = server
            .signed_by(&server_key, &ca)
            .map_err(cert_err("apiserver certificate"))?;

        // A client certificate for the admin, so client-CA authentication is
        // configured too (the kubeconfigs use tokens).
        let mut admin =
            CertificateParams::new(Vec::<String>::new()).map_err(cert_err("admin certificate"))?;
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.distinguished_name.push(DnType::CommonName, ADMIN);
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate().map_err(cert_err("admin key"))?;
        let admin = admin
            .signed_by(&admin_key, &ca)
            .map_err(cert_err("admin certificate"))?;

        let sa_key = KeyPair::generate().map_err(cert_err("ServiceAccount key"))?;

        let tokens = format!(
            "{},{ADMIN},{ADMIN},\"system:masters\"\n{},{NOBODY},{NOBODY}\n",
            random_hex(24)?,
            random_hex(24)?
        );

        let files: [(&str, String, bool); 9] = [
            ("ca.crt", ca.pem(), false),
            ("ca.key", ca_key_pem, true),
            ("apiserver.crt", server.pem(), false),
            ("apiserver.key", server_key.serialize_pem(), true),
            ("admin.crt", admin.pem(), false),
            ("admin.key", admin_key.serialize_pem(), true),
            ("sa.key", sa_key.serialize_pem(), true),
            ("sa.pub", sa_key.public_key_pem(), false),
            ("tokens.csv", tokens, true),
        ];
        for (name, content, secret) in files {
            write(&self.file(name), &content, secret)?;
        }
        Ok(())
    }

    /// The bearer token of `user` in tokens.csv.
    pub fn token(&self, user: &str) -> Result<String> {
        let path = self.file("tokens.csv");
        let csv =
            std::fs::read_to_string(&path).map_err(Error::io("reading the token file", &path))?;
        csv.lines()
            .filter_map(|l| {
                let mut fields = l.split(',');
                Some((fields.next()?, fields.next()?))
            })
            .find(|(_, u)| *u == user)
            .map(|(token, _)| token.to_string())
            .ok_or_else(|| Error::Invalid(format!("{} has no token for {user}", path.display())))
    }
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::io("reading random bytes", "/dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `content` to `path`; mode 600 for secrets.
fn write(path: &Path, content: &str, secret: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).map_err(Error::io("writing a credential", path))?;
    if secret {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io("restricting a credential", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_made_secrets_are_private_and_tokens_are_distinct() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("testenv-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::new(&dir);
        pki.create().unwrap();
        for name in ["ca.crt", "apiserver.crt", "admin.crt"] {
            let pem = std::fs::read_to_string(pki.file(name)).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
        }
        for name in ["ca.key", "apiserver.key", "admin.key", "sa.key"] {
            let pem = std::fs::read_to_string(pki.file(name)).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{name}");
            let mode = std::fs::metadata(pki.file(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let sa_pub = std::fs::read_to_string(pki.file("sa.pub")).unwrap();
        assert!(sa_pub.starts_with("-----BEGIN PUBLIC KEY-----"));
        let admin = pki.token(ADMIN).unwrap();
        let nobody = pki.token(NOBODY).unwrap();
        assert_eq!(admin.len(), 48);
        assert_ne!(admin, nobody);
        assert!(pki.token("someone-else").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
