//! One container of a pod: prepare its process (program, env, Service
//! substitution, paths, confinement), run it, probe it, restart it per
//! `restartPolicy` with back-off, and stop it gracefully (preStop hook,
//! SIGTERM, grace period, SIGKILL). Every change is published on a `watch`
//! for the pod worker, which turns it into the pod's status.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use rustix::process::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use crate::context::Context;
use crate::env::{self, Missing};
use crate::probe::{self, Streak};
use crate::process::{self, Exit, Running};
use crate::status::{self, State};
use crate::substitute::{Unready, foreign_ipv4, substitute};
use crate::volume;
use crate::{expand::expand, program};

/// When to stop: `Some(deadline)` asks for a graceful stop that must be over
/// by the deadline.
pub type StopSignal = watch::Receiver<Option<Instant>>;

/// What the pod worker knows that every container of the pod shares.
#[derive(Debug, Clone)]
pub struct PodSetup {
    pub ip: Ipv4Addr,
    pub layout: volume::Layout,
    /// The ServiceAccount kubeconfig, if the pod has one.
    pub kubeconfig: Option<PathBuf>,
    pub restart_policy: String,
}

/// Applies a change to the container's published status.
type Publish<'a> = &'a (dyn Fn(&dyn Fn(&mut status::Container)) + Sync);

/// Why a process cannot start (yet).
enum NotYet {
    /// Retry later, reporting this waiting state.
    Retry(State),
    /// Never: report and stay so.
    Never(State),
}

/// A prepared process.
struct Prepared {
    spec: process::Spec,
    env: Vec<(String, String)>,
}

/// Back-off between restarts: 1 s doubling to 30 s, reset after a run of a
/// minute (the kubelet's 10 s..5 min is too slow for tests).
fn backoff(restarts: u32) -> Duration {
    Duration::from_secs(1u64 << restarts.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// Runs one container until told to stop; returns when its process is gone.
#[tracing::instrument(skip_all, fields(pod = %pod_name(&pod.borrow()), container = %container.name))]
pub async fn supervise(
    ctx: Arc<Context>,
    pod: watch::Receiver<Arc<Pod>>,
    container: Container,
    setup: PodSetup,
    status_tx: watch::Sender<status::Container>,
    dirty: mpsc::UnboundedSender<()>,
    mut stop: StopSignal,
) {
    let publish = |f: &dyn Fn(&mut status::Container)| {
        status_tx.send_modify(|s| f(s));
        let _ = dirty.send(());
    };
    let log = crate::layout::container_log(&setup.layout.pod_dir, &container.name);
    let mut restarts = 0u32;
    loop {
        if stop.borrow().is_some() {
            return;
        }
        let snapshot = pod.borrow().clone();
        let prepared = match prepare(&ctx, &snapshot, &container, &setup) {
            Ok(p) => p,
            Err(NotYet::Retry(state)) => {
                publish(&|s| s.state = state.clone());
                if wait_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
            Err(NotYet::Never(state)) => {
                tracing::warn!(?state, "container cannot run");
                publish(&|s| {
                    s.state = state.clone();
                    s.will_restart = false;
                });
                let _ = stop.wait_for(Option::is_some).await;
                return;
            }
        };
        let mut running = match Running::spawn(&prepared.spec) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the container's process");
                let state = State::waiting("RunContainerError", e.to_string());
                publish(&|s| s.state = state.clone());
                if wait_or_stop(&mut stop, Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        let started_at = status::now();
        let pid = running.pid();
        tracing::info!(pid, program = %prepared.spec.program.display(), "container started");
        publish(&|s| {
            s.state = State::Running {
                started_at: started_at.clone(),
            };
            s.pid = Some(pid);
            s.ready = false;
        });
        let started = Instant::now();
        let (exit, stopped) = watch_running(
            &container,
            &setup,
            &prepared,
            &mut running,
            &mut stop,
            &log,
            &publish,
        )
        .await;
        let finished_at = status::now();
        let terminated = State::Terminated {
            exit_code: exit.code,
            signal: exit.signal,
            reason: exit.reason().into(),
            started_at: started_at.clone(),
            finished_at,
        };
        process::note(
            &log,
            &format!(
                "container {} (pid {pid}) exited with code {}{}",
                container.name,
                exit.code,
                exit.signal
                    .map(|s| format!(" (signal {s})"))
                    .unwrap_or_default()
            ),
        );
        let restart = !stopped
            && match setup.restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => exit.code != 0,
                _ => true,
            };
        tracing::info!(
            pid,
            code = exit.code,
            signal = exit.signal,
            restart,
            "container exited"
        );
        if !restart {
            publish(&|s| {
                s.state = terminated.clone();
                s.ready = false;
                s.pid = None;
                s.will_restart = false;
            });
            if !stopped {
                let _ = stop.wait_for(Option::is_some).await;
            }
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            restarts = 0;
        }
        restarts += 1;
        let delay = backoff(restarts);
        publish(&|s| {
            s.last_state = Some(terminated.clone());
            s.restart_count += 1;
            s.ready = false;
            s.pid = None;
            s.state = State::waiting(
                "CrashLoopBackOff",
                format!("back-off {}s restarting failed container", delay.as_secs()),
            );
        });
        if wait_or_stop(&mut stop, delay).await {
            return;
        }
    }
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Sleeps, or returns `true` early when a stop is requested.
async fn wait_or_stop(stop: &mut StopSignal, delay: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(Option::is_some) => true,
    };
    stopped || stop.borrow().is_some()
}

/// Probes a running process until it exits or is stopped. Returns how it
/// exited and whether that was because it was stopped.
async fn watch_running(
    container: &Container,
    setup: &PodSetup,
    prepared: &Prepared,
    running: &mut Running,
    stop: &mut StopSignal,
    log: &std::path::Path,
    publish: Publish<'_>,
) -> (Exit, bool) {
    let ports = container.ports.clone().unwrap_or_default();
    let spec_of = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| probe::Spec::from_probe(p, &ports))
    };
    let readiness = spec_of(&container.readiness_probe);
    let liveness = spec_of(&container.liveness_probe);
    let startup = spec_of(&container.startup_probe);
    let start = Instant::now();
    let started = startup.is_none();
    let mut ready_streak = Streak::new(false);
    let mut ever_ready = false;
    let mut live_streak = Streak::new(true);
    let mut startup_streak = Streak::new(false);
    // Readiness and liveness wait for the startup probe, if there is one.
    let mut next_ready = readiness
        .as_ref()
        .filter(|_| started)
        .map(|p| start + p.initial_delay);
    let mut next_live = liveness
        .as_ref()
        .filter(|_| started)
        .map(|p| start + p.initial_delay);
    let mut next_startup = startup.as_ref().map(|p| start + p.initial_delay);
    if readiness.is_none() && started {
        publish(&|s| s.ready = true);
    }
    loop {
        let next = [next_ready, next_live, next_startup]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let stopping = tokio::select! {
            exit = running.wait() => return (exit, false),
            _ = stop.wait_for(Option::is_some) => true,
            _ = sleep_until(next.into()) => false,
        };
        if stopping {
            let deadline = stop.borrow().unwrap_or_else(Instant::now);
            publish(&|s| s.ready = false);
            let exit = terminate(container, setup, prepared, running, deadline, log).await;
            return (exit, true);
        }
        let now = Instant::now();
        if let (Some(spec), Some(at)) = (&startup, next_startup)
            && at <= now
        {
            let ok = probe::run(&spec.action, setup.ip, &prepared.env, spec.timeout).await;
            startup_streak.record(ok, spec);
            if startup_streak.passing {
                next_startup = None;
                next_ready = readiness.as_ref().map(|_| now);
                next_live = liveness.as_ref().map(|p| now + p.period);
                if readiness.is_none() {
                    publish(&|s| s.ready = true);
                }
            } else if startup_streak.failed(spec) {
                process::note(log, "startup probe failed; killing the process");
                running.signal(Signal::KILL);
                next_startup = None;
            } else {
                next_startup = Some(now + spec.period);
            }
        }
        if let (Some(spec), Some(at)) = (&readiness, next_ready)
            && at <= now
        {
            let ok = probe::run(&spec.action, setup.ip, &prepared.env, spec.timeout).await;
            let before = ready_streak.passing;
            let ready = ready_streak.record(ok, spec);
            if ready != before {
                tracing::info!(ready, "readiness changed");
            }
            publish(&|s| s.ready = ready);
            // Until the first success, retry every second rather than every
            // period (10 s by default): the kubelet would wait, but tests
            // should not.
            ever_ready |= ready;
            let period = if ever_ready {
                spec.period
            } else {
                spec.period.min(Duration::from_secs(1))
            };
            next_ready = Some(now + period);
        }
        if let (Some(spec), Some(at)) = (&liveness, next_live)
            && at <= now
        {
            let ok = probe::run(&spec.action, setup.ip, &prepared.env, spec.timeout).await;
            if !live_streak.record(ok, spec) {
                // The kubelet kills an unhealthy container and restarts it
                // per restartPolicy; here that is the exit path below.
                process::note(log, "liveness probe failed; stopping the process");
                let grace = Instant::now() + Duration::from_secs(10);
                return (
                    terminate(container, setup, prepared, running, grace, log).await,
                    false,
                );
            }
            next_live = Some(now + spec.period);
        }
    }
}

/// preStop hook, SIGTERM, wait until the deadline, SIGKILL.
async fn terminate(
    container: &Container,
    setup: &PodSetup,
    prepared: &Prepared,
    running: &mut Running,
    deadline: Instant,
    log: &std::path::Path,
) -> Exit {
    let pid = running.pid();
    if let Some(hook) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let ports = container.ports.clone().unwrap_or_default();
        let run_hook = async {
            if let Some(sleep) = &hook.sleep {
                tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            } else if let Some(exec) = &hook.exec {
                let action = probe::Action::Exec {
                    command: exec.command.clone().unwrap_or_default(),
                };
                probe::run(&action, setup.ip, &prepared.env, remaining).await;
            } else if let Some(get) = &hook.http_get
                && let Some(port) = probe::port(&get.port, &ports)
            {
                let action = probe::Action::Http {
                    port,
                    path: get.path.clone().unwrap_or_else(|| "/".into()),
                    https: get.scheme.as_deref() == Some("HTTPS"),
                };
                probe::run(&action, setup.ip, &prepared.env, remaining).await;
            }
        };
        process::note(
            log,
            &format!("container {}: running the preStop hook", container.name),
        );
        let _ = tokio::time::timeout(remaining, run_hook).await;
    }
    let grace = deadline.saturating_duration_since(Instant::now());
    process::note(
        log,
        &format!(
            "container {}: sending SIGTERM to pid {pid} (grace {}s)",
            container.name,
            grace.as_secs()
        ),
    );
    let sent = Instant::now();
    running.signal(Signal::TERM);
    match tokio::time::timeout(grace, running.wait()).await {
        Ok(exit) => {
            process::note(
                log,
                &format!(
                    "container {}: pid {pid} exited after SIGTERM with code {} in {} ms",
                    container.name,
                    exit.code,
                    sent.elapsed().as_millis()
                ),
            );
            exit
        }
        Err(_) => {
            process::note(
                log,
                &format!(
                    "container {}: pid {pid} outlived its grace period; sending SIGKILL",
                    container.name
                ),
            );
            running.signal(Signal::KILL);
            running.wait().await
        }
    }
}

/// Everything that must hold before the process can start.
fn prepare(
    ctx: &Context,
    pod: &Pod,
    container: &Container,
    setup: &PodSetup,
) -> Result<Prepared, NotYet> {
    let launch = program::launch(
        container.image.as_deref(),
        container.command.as_deref(),
        container.args.as_deref(),
    )
    .map_err(|refusal| NotYet::Never(State::waiting(refusal.reason(), refusal.message())))?;
    let program_path = ctx.program_path(launch.program).ok_or_else(|| {
        NotYet::Retry(State::waiting(
            "BinaryNotFound",
            format!(
                "{} not found (build it: cargo build --bins; or set TELEMETRY_BIN_DIR)",
                launch.program.binary_name()
            ),
        ))
    })?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sources_cm = |name: &str| ctx.config_map(&ns, name);
    let sources_secret = |name: &str| ctx.secret(&ns, name);
    let sources = env::Sources {
        config_map: &sources_cm,
        secret: &sources_secret,
    };
    let mut env = env::resolve(pod, container, setup.ip, &sources)
        .map_err(|Missing(m)| NotYet::Retry(State::waiting("CreateContainerConfigError", m)))?;
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let mut args: Vec<String> = launch.args.iter().map(|a| expand(a, lookup)).collect();

    // Services, then paths: both only ever shorten what a value can reach.
    let resolve = |name: &str, namespace: &str| ctx.lookup_service(name, namespace);
    let waiting = |Unready(svc): Unready| {
        NotYet::Retry(State::waiting(
            "ContainerCreating",
            format!("waiting for a Ready pod behind service {svc}"),
        ))
    };
    let mounts = volume::mounts(&setup.layout, pod, container);
    for arg in &mut args {
        *arg = volume::rewrite_path(&substitute(arg, &ns, &resolve).map_err(waiting)?, &mounts);
    }
    for (_, value) in &mut env {
        *value = volume::rewrite_path(&substitute(value, &ns, &resolve).map_err(waiting)?, &mounts);
    }
    let ports = container.ports.clone().unwrap_or_default();
    program::confine(launch.program, setup.ip, &ports, &mut args, &mut env);

    let foreign = args
        .iter()
        .chain(env.iter().map(|(_, v)| v))
        .find_map(|v| foreign_ipv4(v));
    if let Some(addr) = foreign {
        return Err(NotYet::Retry(State::waiting(
            "NonLoopbackAddress",
            format!(
                "refusing to start a process configured with {addr}: only 127.0.0.0/8 may be dialled"
            ),
        )));
    }

    let cwd = match container.working_dir.as_deref() {
        Some(wd) => PathBuf::from(volume::rewrite_path(wd, &mounts)),
        None => setup.layout.pod_dir.clone(),
    };
    if let Err(e) = std::fs::create_dir_all(&cwd) {
        return Err(NotYet::Retry(State::waiting(
            "CreateContainerError",
            format!("working directory {}: {e}", cwd.display()),
        )));
    }

    // The process sees the container's environment plus what any container
    // runtime adds, never the stand-in's own.
    let mut full_env: Vec<(String, String)> = vec![
        ("PATH".into(), ctx.path_env.clone()),
        (
            "HOSTNAME".into(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        ("HOME".into(), setup.layout.pod_dir.display().to_string()),
    ];
    if let Some(kc) = &setup.kubeconfig {
        full_env.push(("KUBECONFIG".into(), kc.display().to_string()));
    }
    for (k, v) in &env {
        full_env.retain(|(name, _)| name != k);
        full_env.push((k.clone(), v.clone()));
    }
    let spec = process::Spec {
        program: program_path,
        args,
        env: full_env.clone(),
        cwd,
        log: crate::layout::container_log(&setup.layout.pod_dir, &container.name),
        pid_file: crate::layout::container_pid(&setup.layout.pod_dir, &container.name),
    };
    Ok(Prepared {
        spec,
        env: full_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_thirty() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
