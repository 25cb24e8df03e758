//! A real Kubernetes control plane for tests, on machines without Docker.
//!
//! `scripts/testenv build` builds etcd, kube-apiserver,
//! kube-controller-manager, kubectl and helm from Go modules; this crate is
//! the rest:
//!
//! - **the supervisor** (binary `telemetry-testenv`, wrapped by
//!   `scripts/testenv`; entry points in [`control_plane`]: `up`, `down`,
//!   `status`, `env`): runs the control plane as [`daemon`]s tracked by PID
//!   files in one state directory, with credentials from [`pki`].
//! - **the kubelet stand-in** (binary `telemetry-kubelet`, entry point
//!   [`kubelet::run`]): registers a Ready [`node`], binds Pending pods, and
//!   runs each [`pod`] as local processes on its own 127.0.0.N address
//!   ([`ipam`]); what the pod workers share (client, informer caches,
//!   addresses) is their [`context`]. Per [`container`]: which [`program`]
//!   an image maps to and how it is confined to its pod IP; its [`env`]
//!   (with [`expand`] for `$(VAR)`);
//!   [`substitute`] for Service names (no DNS, no kube-proxy); [`volume`]s as
//!   directories and path rewriting; [`token`] for ServiceAccount
//!   credentials; [`probe`]s; [`process`] start/signal/reap. The pod's
//!   [`status`] is built from what the containers do. [`claim`] gives
//!   PersistentVolumeClaims a volume. Files live where [`layout`] says.
//! - **test support** ([`cluster`]): attach to (or start, through
//!   [`control_plane`]) the testenv once per test binary, a namespace per
//!   test, polling helpers.
//!
//! Data flow: pod watch → `kubelet` (bind, spawn a worker per pod) → `pod`
//! (IP, volumes, token) → `container` (prepare → spawn → probe → restart /
//! terminate) → `status` → the pod's status subresource. `kubelet` builds the
//! `context` that `pod` and `container` use; none of them imports the one
//! before it.
//!
//! The stand-in never dials outside 127.0.0.0/8: probes go to the pod IP,
//! Services resolve to pod IPs, and a process whose configuration names a
//! non-loopback IPv4 address is not started.

pub mod claim;
pub mod cluster;
pub mod container;
pub mod context;
pub mod control_plane;
pub mod daemon;
pub mod env;
pub mod error;
pub mod expand;
pub mod ipam;
pub mod kubelet;
pub mod layout;
pub mod node;
pub mod pki;
pub mod pod;
pub mod probe;
pub mod process;
pub mod program;
pub mod status;
pub mod substitute;
pub mod token;
pub mod volume;

pub use cluster::{Cluster, TestNamespace, cluster, process_alive, ready_ip, ready_pods, wait_for};
pub use error::{Error, Result};
