//! What every pod worker and container supervisor shares ([`Context`]):
//! the client, the directories, the informer caches (ConfigMaps and Secrets
//! for env and volumes, Services and pods for Service substitution) and the
//! pod address allocator. [`kubelet`](crate::kubelet) builds it; [`pod`](crate::pod)
//! and [`container`](crate::container) use it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::ipam::PodIps;
use crate::program::Program;
use crate::substitute::{Lookup, Target};
use crate::token::Apiserver;

/// What every pod worker shares.
pub struct Context {
    pub client: kube::Client,
    pub node: String,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub apiserver: Apiserver,
    /// PATH handed to processes (to find redis-server and friends).
    pub path_env: String,
    pub(crate) pods: Store<Pod>,
    pub(crate) services: Store<Service>,
    pub(crate) config_maps: Store<ConfigMap>,
    pub(crate) secrets: Store<Secret>,
    pub(crate) ips: Mutex<PodIps>,
}

impl Context {
    pub fn config_map(&self, ns: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(&ObjectRef::new(name).within(ns))
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(ns))
    }

    /// The executable for a program: ours from the bin dir, redis from PATH.
    pub fn program_path(&self, program: Program) -> Option<PathBuf> {
        match program {
            Program::Ingest | Program::Operator => {
                let path = self.bin_dir.join(program.binary_name());
                path.is_file().then_some(path)
            }
            Program::Redis => std::env::split_paths(&self.path_env)
                .map(|dir| dir.join(program.binary_name()))
                .find(|p| p.is_file()),
        }
    }

    /// The pod's address: the one it already has (the stand-in restarted),
    /// or a new one.
    pub fn pod_ip(&self, pod: &Pod) -> Option<Ipv4Addr> {
        let mut ips = self.ips.lock().expect("ip allocator lock");
        let existing = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| ip.is_loopback());
        match existing {
            Some(ip) => {
                ips.claim(ip);
                Some(ip)
            }
            None => {
                let busy = std::fs::read_to_string("/proc/net/tcp")
                    .map(|t| crate::ipam::listening_ips(&t))
                    .unwrap_or_default();
                let mut skipped = Vec::new();
                let ip = loop {
                    match ips.allocate() {
                        Some(ip) if busy.contains(&ip) => skipped.push(ip),
                        other => break other,
                    }
                };
                for ip in skipped {
                    ips.release(ip);
                }
                ip
            }
        }
    }

    pub fn release_ip(&self, ip: Ipv4Addr) {
        self.ips.lock().expect("ip allocator lock").release(ip);
    }

    /// DNS and kube-proxy in one: which Ready pod stands for a Service.
    pub fn lookup_service(&self, name: &str, ns: &str) -> Lookup {
        let Some(svc) = self.services.get(&ObjectRef::new(name).within(ns)) else {
            return Lookup::NotAService;
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let Some(selector) = spec.selector.filter(|s| !s.is_empty()) else {
            return Lookup::NotAService;
        };
        let mut ready: Vec<(Ipv4Addr, Arc<Pod>)> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .filter(|p| is_ready(p))
            .filter_map(|p| {
                let ip = p
                    .status
                    .as_ref()?
                    .pod_ip
                    .as_deref()?
                    .parse::<Ipv4Addr>()
                    .ok()?;
                ip.is_loopback().then_some((ip, p))
            })
            .collect();
        // Stable choice, so restarts of a client tend to land on one pod.
        ready.sort_by_key(|(ip, _)| *ip);
        let Some((ip, pod)) = ready.into_iter().next() else {
            return Lookup::NotReady;
        };
        let container_ports: Vec<_> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .cloned()
            .collect();
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                let target = match &p.target_port {
                    None => port,
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok()?,
                    Some(named @ IntOrString::String(_)) => {
                        crate::probe::port(named, &container_ports)?
                    }
                };
                Some((port, target))
            })
            .collect();
        Lookup::Ready(Target { ip, ports })
    }
}

/// Whether the API says the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
