//! The fake Node the stand-in registers: Ready, addressed 127.0.0.1, with
//! the machine's capacity. The node-lifecycle controller is off in the
//! testenv, so nothing marks it NotReady; the heartbeat only keeps
//! `lastHeartbeatTime` honest for people reading `kubectl describe node`.

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::error::Result;

/// Creates the node if needed and marks it Ready.
#[tracing::instrument(skip(client))]
pub async fn register(client: &kube::Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "node.kubernetes.io/instance-type": "telemetry-kubelet",
            }},
        }))
        .map_err(|source| crate::Error::Encode {
            what: "node",
            source,
        })?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            // Another stand-in (or a previous run) won the race: fine.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    heartbeat(client, name).await
}

/// Patches the node's status: Ready, addresses, capacity.
pub async fn heartbeat(client: &kube::Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = crate::status::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = json!({"cpu": cpus.to_string(), "memory": memory(), "pods": "250", "ephemeral-storage": "100Gi"});
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now,
               "message": "telemetry-kubelet runs pods as local processes"})
    };
    let status = json!({"status": {
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "capacity": capacity,
        "allocatable": capacity,
        "nodeInfo": {
            "machineID": "telemetry-kubelet", "systemUUID": "telemetry-kubelet", "bootID": "telemetry-kubelet",
            "kernelVersion": "", "osImage": "local processes", "containerRuntimeVersion": "telemetry-kubelet://0.1",
            "kubeletVersion": "telemetry-kubelet", "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH,
        },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Total memory as a quantity, from /proc/meminfo.
fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)
                .map(|kb| format!("{kb}Ki"))
        })
        .unwrap_or_else(|| "8Gi".into())
}
