//! Pod volumes as directories under the pod's state directory, and the
//! rewriting of container paths to them (there is no mount namespace: a
//! process sees the host's file system, so `--config /etc/x/config.yaml`
//! must become the materialized path).
//!
//! ConfigMap and Secret volumes are re-synced while the pod runs, like the
//! kubelet does eventually; files are replaced by rename so a reader never
//! sees half a file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};

use crate::env::{Sources, secret_data};
use crate::error::{Error, Result};

/// A container path and the host directory or file that stands for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
}

/// Where a pod's volumes live on the host.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The pod's own directory (emptyDirs, ConfigMap and Secret copies).
    pub pod_dir: PathBuf,
    /// Root of the per-claim directories, which outlive pods.
    pub claims_dir: PathBuf,
}

impl Layout {
    /// The host directory of the pod volume `name`.
    pub fn volume_dir(&self, pod: &Pod, name: &str) -> PathBuf {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let claim = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .find(|v| v.name == name)
            .and_then(|v| v.persistent_volume_claim.as_ref());
        match claim {
            Some(claim) => claim_dir(&self.claims_dir, ns, &claim.claim_name),
            None => self.pod_dir.join("volumes").join(name),
        }
    }
}

/// The directory of a PersistentVolumeClaim, keyed by namespace and name so
/// it survives the pods that use it.
pub fn claim_dir(claims_dir: &Path, namespace: &str, claim: &str) -> PathBuf {
    claims_dir.join(namespace).join(claim)
}

/// Writes every volume of the pod (creating directories, copying ConfigMap
/// and Secret keys). Called before each start and then periodically.
pub fn sync(layout: &Layout, pod: &Pod, sources: &Sources<'_>) -> Result<(), String> {
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = layout.volume_dir(pod, &volume.name);
        let files: Option<Vec<(String, Vec<u8>, u32)>> = if let Some(src) = &volume.config_map {
            let mode = src.default_mode.map_or(0o644, |m| m as u32);
            match (sources.config_map)(&src.name) {
                Some(cm) => {
                    let mut data: Vec<(String, Vec<u8>)> = cm
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                        .collect();
                    data.extend(
                        cm.binary_data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.0.clone())),
                    );
                    Some(
                        select(data, src.items.as_deref(), mode)
                            .map_err(|k| format!("configmap {:?} has no key {k:?}", src.name))?,
                    )
                }
                None if src.optional == Some(true) => Some(vec![]),
                None => return Err(format!("configmap {:?} not found", src.name)),
            }
        } else if let Some(src) = &volume.secret {
            let name = src.secret_name.clone().unwrap_or_default();
            let mode = src.default_mode.map_or(0o644, |m| m as u32);
            match (sources.secret)(&name) {
                Some(secret) => {
                    let data = secret_data(&secret)
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    Some(
                        select(data, src.items.as_deref(), mode)
                            .map_err(|k| format!("secret {name:?} has no key {k:?}"))?,
                    )
                }
                None if src.optional == Some(true) => Some(vec![]),
                None => return Err(format!("secret {name:?} not found")),
            }
        } else if let Some(src) = &volume.projected {
            let mode = src.default_mode.map_or(0o644, |m| m as u32);
            let mut files = Vec::new();
            for source in src.sources.iter().flatten() {
                if let Some(p) = &source.config_map
                    && let Some(cm) = (sources.config_map)(&p.name)
                {
                    let data = cm
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                        .collect();
                    files.extend(select(data, p.items.as_deref(), mode).unwrap_or_default());
                }
                if let Some(p) = &source.secret
                    && let Some(secret) = (sources.secret)(&p.name)
                {
                    let data = secret_data(&secret)
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    files.extend(select(data, p.items.as_deref(), mode).unwrap_or_default());
                }
            }
            Some(files)
        } else {
            // emptyDir, persistentVolumeClaim, and anything else: a directory.
            None
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if let Some(files) = files {
            write_files(&dir, &files).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The files of a ConfigMap/Secret volume: every key, or only `items`.
fn select(
    data: Vec<(String, Vec<u8>)>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    match items {
        None => Ok(data
            .into_iter()
            .map(|(k, v)| (k, v, default_mode))
            .collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                let value = data
                    .iter()
                    .find(|(k, _)| *k == item.key)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| item.key.clone())?;
                let mode = item.mode.map_or(default_mode, |m| m as u32);
                Ok((item.path.clone(), value, mode))
            })
            .collect(),
    }
}

/// Makes `dir` hold exactly `files`, touching only what changed.
fn write_files(dir: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut wanted = BTreeSet::new();
    for (rel, content, mode) in files {
        // Keys are validated by the apiserver, items' paths may not contain
        // `..`; refuse anything that would escape the volume anyway.
        if rel.split('/').any(|part| part == ".." || part.is_empty()) {
            continue;
        }
        let path = dir.join(rel);
        wanted.insert(rel.split('/').next().unwrap_or(rel).to_owned());
        if std::fs::read(&path).ok().as_deref() == Some(content.as_slice()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io("creating volume directory", parent))?;
        }
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        std::fs::write(&tmp, content).map_err(Error::io("writing volume file", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(Error::io("setting volume file mode", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("replacing volume file", &path))?;
    }
    // Keys that disappeared from the ConfigMap/Secret disappear here too.
    let entries = std::fs::read_dir(dir).map_err(Error::io("listing volume directory", dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(&name) {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
    Ok(())
}

/// The mounts of one container: each `volumeMounts[]` entry, and the working
/// directory when it is not under one of them.
pub fn mounts(layout: &Layout, pod: &Pod, container: &Container) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let mut host = layout.volume_dir(pod, &m.name);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host = host.join(sub);
            }
            Mount {
                container_path: m.mount_path.trim_end_matches('/').to_owned(),
                host_path: host,
            }
        })
        .collect();
    if let Some(wd) = container
        .working_dir
        .as_deref()
        .filter(|w| w.starts_with('/'))
        && rewrite_path(wd, &mounts) == wd
    {
        mounts.push(Mount {
            container_path: wd.trim_end_matches('/').to_owned(),
            host_path: layout.pod_dir.join("workdir").join(&container.name),
        });
    }
    mounts
}

/// Rewrites a value that starts with a mount path (or a `--flag=` whose
/// value does) to the host path. The longest matching mount wins, and only
/// at a path boundary (`/data` does not match `/database`).
pub fn rewrite_path(value: &str, mounts: &[Mount]) -> String {
    let (prefix, path) = match value.find('=') {
        Some(eq) if value.starts_with('-') => value.split_at(eq + 1),
        _ => ("", value),
    };
    let best = mounts
        .iter()
        .filter(|m| {
            let cp = m.container_path.as_str();
            if cp.is_empty() {
                return false;
            }
            path.strip_prefix(cp)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|m| m.container_path.len());
    match best {
        Some(m) => {
            let rest = &path[m.container_path.len()..];
            format!("{prefix}{}{rest}", m.host_path.display())
        }
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: &str, h: &str) -> Mount {
        Mount {
            container_path: c.into(),
            host_path: h.into(),
        }
    }

    #[test]
    fn paths_under_a_mount_are_rewritten_longest_mount_first() {
        let mounts = [
            m("/etc/telemetry", "/s/p/cfg"),
            m("/etc", "/s/p/etc"),
            m("/data", "/s/pvc"),
        ];
        assert_eq!(
            rewrite_path("/etc/telemetry/config.yaml", &mounts),
            "/s/p/cfg/config.yaml"
        );
        assert_eq!(rewrite_path("/etc/hosts", &mounts), "/s/p/etc/hosts");
        assert_eq!(rewrite_path("/data", &mounts), "/s/pvc");
        assert_eq!(
            rewrite_path("--config=/data/x", &mounts),
            "--config=/s/pvc/x"
        );
    }

    #[test]
    fn paths_outside_mounts_and_partial_segments_are_kept() {
        let mounts = [m("/data", "/s/pvc")];
        for v in ["/database/x", "data/x", "redis://127.0.0.1/data", "x=/data"] {
            assert_eq!(rewrite_path(v, &mounts), v);
        }
    }

    #[test]
    fn items_select_and_rename_keys_and_missing_keys_fail() {
        let data = vec![
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ];
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o600),
        }];
        assert_eq!(
            select(data.clone(), Some(&items), 0o644).unwrap(),
            vec![("sub/b.txt".to_string(), b"2".to_vec(), 0o600)]
        );
        assert_eq!(select(data.clone(), None, 0o644).unwrap().len(), 2);
        let missing = [KeyToPath {
            key: "zzz".into(),
            path: "z".into(),
            mode: None,
        }];
        assert_eq!(select(data, Some(&missing), 0o644), Err("zzz".to_string()));
    }

    #[test]
    fn write_files_replaces_changed_files_and_removes_stale_keys() {
        let dir = std::env::temp_dir().join(format!("testenv-volume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_files(
            &dir,
            &[
                ("a".into(), b"1".to_vec(), 0o644),
                ("b".into(), b"2".to_vec(), 0o644),
            ],
        )
        .unwrap();
        write_files(&dir, &[("a".into(), b"10".to_vec(), 0o644)]).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"10");
        assert!(!dir.join("b").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
