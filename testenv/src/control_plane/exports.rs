//! What `up` and `env` print: the running control plane's ports and
//! binaries (`cluster.env` in the state directory) as shell exports.

use std::path::{Path, PathBuf};

/// A running control plane: what `env` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub etcd_port: u16,
    pub etcd_peer_port: u16,
    pub apiserver_port: u16,
    /// The Go-built binaries.
    pub bin_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Env {
    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }

    pub fn kubectl(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    pub fn helm(&self) -> PathBuf {
        self.bin_dir.join("helm")
    }

    /// `cluster.env`'s content.
    pub(super) fn file(&self) -> String {
        format!(
            "ETCD_PORT={}\nETCD_PEER_PORT={}\nAPISERVER_PORT={}\nBIN={}\n",
            self.etcd_port,
            self.etcd_peer_port,
            self.apiserver_port,
            self.bin_dir.display()
        )
    }

    pub(super) fn parse(text: &str, state_dir: &Path) -> Option<Self> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Some(Self {
            etcd_port: get("ETCD_PORT")?.parse().ok()?,
            etcd_peer_port: get("ETCD_PEER_PORT")?.parse().ok()?,
            apiserver_port: get("APISERVER_PORT")?.parse().ok()?,
            bin_dir: get("BIN")?.into(),
            state_dir: state_dir.to_owned(),
        })
    }

    /// Shell lines for `eval`: KUBECONFIG, TESTENV_STATE_DIR,
    /// TESTENV_KUBECTL, TESTENV_HELM, and the pinned kubectl and helm first
    /// on PATH (once, however often it is eval'd).
    pub fn exports(&self) -> String {
        let bin = shell_quote(&self.bin_dir.display().to_string());
        format!(
            "export KUBECONFIG={}\nexport TESTENV_STATE_DIR={}\nexport TESTENV_KUBECTL={}\nexport TESTENV_HELM={}\ncase \":$PATH:\" in *:{bin}:*) ;; *) export PATH={bin}:\"$PATH\" ;; esac\n",
            shell_quote(&self.kubeconfig().display().to_string()),
            shell_quote(&self.state_dir.display().to_string()),
            shell_quote(&self.kubectl().display().to_string()),
            shell_quote(&self.helm().display().to_string()),
        )
    }
}

/// `s` quoted for a POSIX shell (as is when it needs no quoting).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@=%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_env_round_trips() {
        let env = Env {
            etcd_port: 1,
            etcd_peer_port: 2,
            apiserver_port: 3,
            bin_dir: "/cache/bin".into(),
            state_dir: "/state".into(),
        };
        assert_eq!(Env::parse(&env.file(), Path::new("/state")), Some(env));
        assert_eq!(Env::parse("ETCD_PORT=x\n", Path::new("/state")), None);
    }

    #[test]
    fn exports_quote_paths_for_the_shell_and_put_the_binaries_on_path_once() {
        let env = Env {
            etcd_port: 1,
            etcd_peer_port: 2,
            apiserver_port: 3,
            bin_dir: "/cache/my bin".into(),
            state_dir: "/state/it's".into(),
        };
        let out = env.exports();
        assert!(
            out.contains("export KUBECONFIG='/state/it'\\''s/kubeconfig'\n"),
            "{out}"
        );
        assert!(
            out.contains("export TESTENV_KUBECTL='/cache/my bin/kubectl'\n"),
            "{out}"
        );
        assert!(out.contains("*:'/cache/my bin':*) ;;"), "{out}");
        let parsed = crate::cluster::parse_exports(&out);
        assert!(parsed.contains(&("TESTENV_HELM".into(), "/cache/my bin/helm".into())));
    }
}
