//! Leader election: with `--leader-elect` several replicas run, and only the
//! one holding a `coordination.k8s.io` Lease does the leader's work.
//!
//! [`lead_while_holding`] is the whole protocol, for whatever future is the
//! leader's work:
//! 1. wait until this replica holds the Lease (its HTTP server already
//!    answers, so a follower is ready to take over);
//! 2. run the work while renewing the Lease;
//! 3. when the work ends (a clean shutdown), release the Lease, so that a
//!    follower takes over at once instead of after the term;
//! 4. when the Lease is lost, drop the work at once and return
//!    [`Error::LeadershipLost`]: the process exits and comes back as a
//!    follower, as with controller-runtime. The work never runs without the
//!    Lease.
//!
//! kube-lease-manager takes, renews (`grace` before the term ends) and
//! releases the Lease, with server-side apply so that two replicas cannot both
//! take it. A watch on the Lease, read as a [`Term`], adds what it lacks:
//! - a follower learns at once that the holder released the Lease (the crate
//!   would look again only when the holder's term would have ended);
//! - the leader knows when its term ends from the `renewTime` it wrote itself
//!   (its own clock on both ends), and stops by then if no renewal shows,
//!   whether the renewal failed or hangs: by the time a follower may take the
//!   Lease (the nodes' clocks agreeing), this replica has stopped.

use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::LeaderElection;
use crate::metrics::{LeaderTransition, Metrics};
use crate::{Error, Result};

/// How long a clean shutdown waits for the Lease to be released; after that
/// the followers wait for the term to end instead.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying a failed renewal (within the term).
const RENEW_RETRY: Duration = Duration::from_millis(500);
/// Longest pause of a follower between failed reads of the Lease.
const MAX_FOLLOWER_RETRY: Duration = Duration::from_secs(30);

/// What the Lease says: who holds it, and until when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Term {
    /// `spec.holderIdentity`; `None` when released (or never taken).
    pub holder: Option<String>,
    /// `spec.renewTime + spec.leaseDurationSeconds`: when the holder's term
    /// ends unless it renews.
    pub ends: Option<SystemTime>,
}

impl Term {
    /// Reads a Lease.
    pub fn of(lease: &Lease) -> Self {
        let Some(spec) = &lease.spec else {
            return Self::default();
        };
        let ends = || {
            let renewed = SystemTime::from(spec.renew_time.as_ref()?.0);
            let duration = u64::try_from(spec.lease_duration_seconds?).ok()?;
            renewed.checked_add(Duration::from_secs(duration))
        };
        Self {
            holder: spec.holder_identity.clone(),
            ends: ends(),
        }
    }

    /// Whether `identity` holds the Lease at `now`.
    pub fn held_by(&self, identity: &str, now: SystemTime) -> bool {
        self.holder.as_deref() == Some(identity) && self.ends.is_some_and(|ends| now < ends)
    }
}

/// This replica's part in the election for one Lease.
pub struct Elector {
    client: Client,
    config: LeaderElection,
    /// Rebuilt to make it read the Lease again (see [`Elector::acquire`]).
    manager: LeaseManager,
    /// The Lease as last watched.
    term: watch::Receiver<Term>,
    /// Watches the Lease into `term`; aborted with the elector.
    _watch: AbortOnDropHandle<()>,
}

impl Elector {
    /// Takes part in the election: creates the Lease if it does not exist
    /// and starts watching it. Fails when the Lease cannot be read or
    /// created (RBAC, a missing namespace), so that a misconfiguration shows
    /// at startup.
    pub async fn new(client: Client, config: LeaderElection) -> Result<Self> {
        let manager = build(&client, &config).await?;
        let leases = Api::<Lease>::namespaced(client.clone(), &config.namespace);
        let (tx, term) = watch::channel(Term::default());
        let span = info_span!("lease watch", lease = %lease_key(&config));
        let watch =
            tokio::spawn(watch_lease(leases, config.lease_name.clone(), tx).instrument(span));
        Ok(Self {
            client,
            config,
            manager,
            term,
            _watch: AbortOnDropHandle::new(watch),
        })
    }

    /// Whether this replica holds the Lease, as last watched.
    pub fn holds(&self) -> bool {
        self.term
            .borrow()
            .held_by(&self.config.identity, SystemTime::now())
    }

    /// Waits until this replica holds the Lease. Errors reading or taking it
    /// are logged and retried: a follower has nothing else to do.
    pub async fn acquire(&mut self) {
        let mut failures = 0u32;
        loop {
            let outcome = tokio::select! {
                taken = self.manager.changed() => Some(taken),
                () = released(&mut self.term) => None,
            };
            match outcome {
                Some(Ok(true)) => return,
                Some(Ok(false)) => continue,
                Some(Err(error)) => {
                    failures += 1;
                    let retry = follower_retry(failures);
                    warn!(%error, ?retry, "reading or taking the Lease failed; retrying");
                    tokio::time::sleep(retry).await;
                }
                None => debug!("the Lease was released; reading it again"),
            }
            // A fresh manager reads the Lease now; the old one would look
            // again only when the holder's term ends. After an error it also
            // recreates a deleted Lease.
            match build(&self.client, &self.config).await {
                Ok(manager) => self.manager = manager,
                Err(error) => warn!(%error, "reading the Lease failed; retrying"),
            }
        }
    }

    /// While this replica leads: renews the Lease, and resolves once it no
    /// longer holds it: another replica's name in the Lease, or a term that
    /// ended without a renewal showing. `since` is when it was acquired.
    pub async fn lost(&mut self, since: SystemTime) -> Error {
        let manager = &self.manager;
        let renewing = async {
            loop {
                match manager.changed().await {
                    Ok(true) => {}
                    Ok(false) => return "another replica holds it",
                    Err(error) => {
                        warn!(%error, "renewing the Lease failed; retrying until the term ends");
                        tokio::time::sleep(RENEW_RETRY).await;
                    }
                }
            }
        };
        let ending = term_ends(
            &mut self.term,
            &self.config.identity,
            since,
            self.config.duration,
        );
        let reason = tokio::select! {
            reason = renewing => reason,
            reason = ending => reason,
        };
        Error::LeadershipLost {
            lease: lease_key(&self.config),
            reason,
        }
    }

    /// Gives the Lease up if this replica holds it (otherwise changes
    /// nothing), so that a follower takes over without waiting for the term
    /// to end.
    pub async fn release(&self) -> Result<()> {
        self.manager.release().await.map_err(|source| Error::Lease {
            action: format!("release Lease {}", lease_key(&self.config)),
            source,
        })
    }
}

/// Runs `work`, the leader's work, only while this replica holds the Lease:
/// waits for it (returning `Ok` if `shutdown` comes first), runs the work
/// while renewing, and releases the Lease when the work ends. If the Lease is
/// lost meanwhile, the work is dropped on the spot and
/// [`Error::LeadershipLost`] returned. `work` should end on `shutdown`.
pub async fn lead_while_holding<F>(
    client: Client,
    config: &LeaderElection,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    work: F,
) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let span =
        info_span!("leader election", lease = %lease_key(config), identity = %config.identity);
    async move {
        let mut elector = Elector::new(client, config.clone()).await?;
        info!("waiting for leadership");
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.cancelled() => {
                // A take-over may have been under way: make sure it is undone.
                release(&elector).await;
                return Ok(());
            }
        }
        let since = SystemTime::now();
        metrics.record_leadership(LeaderTransition::Acquired);
        info!("leading");

        let result = tokio::select! {
            result = work => result,
            lost = elector.lost(since) => {
                metrics.record_leadership(LeaderTransition::Lost);
                error!(error = %lost, "leadership lost; the leader's work is stopped");
                return Err(lost);
            }
        };
        release(&elector).await;
        metrics.record_leadership(LeaderTransition::Released);
        info!("stopped leading");
        result
    }
    .instrument(span)
    .await
}

/// Releases the Lease on the way out, waiting at most [`RELEASE_TIMEOUT`]: if
/// that fails, the followers take over when the term ends.
async fn release(elector: &Elector) {
    match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
        Ok(Ok(())) => debug!("released the Lease"),
        Ok(Err(error)) => warn!(%error, "the followers take over when the term ends"),
        Err(_) => warn!(
            timeout = ?RELEASE_TIMEOUT,
            "releasing the Lease got no answer; the followers take over when the term ends"
        ),
    }
}

async fn build(client: &Client, config: &LeaderElection) -> Result<LeaseManager> {
    LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration.as_secs())
        .with_grace(config.grace.as_secs())
        .build()
        .await
        .map_err(|source| Error::Lease {
            action: format!("take part in the election for Lease {}", lease_key(config)),
            source,
        })
}

/// Keeps `term` up to date with the Lease, for as long as it runs (the
/// watcher retries with backoff; until it recovers, `term` stays as last
/// seen, and a leader's term runs out).
async fn watch_lease(leases: Api<Lease>, name: String, term: watch::Sender<Term>) {
    let mut events = std::pin::pin!(watcher::watch_object(leases, &name).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(lease) => {
                let new = lease.as_ref().map(Term::of).unwrap_or_default();
                term.send_if_modified(|old| {
                    let changed = *old != new;
                    *old = new;
                    changed
                });
            }
            Err(error) => warn!(%error, "watching the Lease failed; retrying"),
        }
    }
}

/// Resolves when the watched Lease changes to having no holder.
async fn released(term: &mut watch::Receiver<Term>) {
    loop {
        if term.changed().await.is_err() {
            // The watch is gone: only the lease manager's own schedule is left.
            return std::future::pending().await;
        }
        if term.borrow_and_update().holder.is_none() {
            return;
        }
    }
}

/// Resolves, with the reason, when the watched Lease shows that `identity`
/// no longer holds it. Until the watch shows this replica's own renewal, the
/// term is taken to end `duration` after `since`, when it was acquired; a
/// term of ours that had ended before then is a previous run's and ignored.
async fn term_ends(
    term: &mut watch::Receiver<Term>,
    identity: &str,
    since: SystemTime,
    duration: Duration,
) -> &'static str {
    let mut ends = since + duration;
    let mut seen = false;
    loop {
        {
            let now = term.borrow_and_update();
            if now.holder.as_deref() == Some(identity) {
                seen = true;
                if let Some(renewed) = now.ends.filter(|&e| e > since) {
                    ends = renewed;
                }
            } else if seen {
                return match now.holder {
                    Some(_) => "another replica holds it",
                    None => "it was released or deleted",
                };
            }
        }
        let left = ends
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return "it was not renewed before the term ended";
        }
        tokio::select! {
            changed = term.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(left).await;
                }
            }
            () = tokio::time::sleep(left) => {}
        }
    }
}

/// 1 s doubling per consecutive failure, at most [`MAX_FOLLOWER_RETRY`].
fn follower_retry(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_FOLLOWER_RETRY)
}

fn lease_key(config: &LeaderElection) -> String {
    format!("{}/{}", config.namespace, config.lease_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    fn lease(holder: Option<&str>, renewed_secs: Option<i64>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renewed_secs.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_term_ends_its_duration_after_the_last_renewal() {
        let term = Term::of(&lease(Some("a"), Some(1_000), Some(15)));
        assert_eq!(term.holder.as_deref(), Some("a"));
        assert_eq!(term.ends, Some(at(1_015)));
        assert!(term.held_by("a", at(1_014)));
        assert!(!term.held_by("a", at(1_015)), "ended");
        assert!(!term.held_by("b", at(1_001)), "someone else's");
    }

    #[test]
    fn a_released_or_incomplete_lease_is_held_by_nobody() {
        let released = Term::of(&lease(None, None, None));
        assert_eq!(released, Term::default());
        assert!(!released.held_by("a", at(0)));

        let no_renewal = Term::of(&lease(Some("a"), None, Some(15)));
        assert_eq!(no_renewal.ends, None);
        assert!(!no_renewal.held_by("a", at(0)));

        let empty = Term::of(&Lease::default());
        assert_eq!(empty, Term::default());
    }

    #[test]
    fn follower_retries_back_off_to_thirty_seconds() {
        assert_eq!(follower_retry(1), Duration::from_secs(1));
        assert_eq!(follower_retry(3), Duration::from_secs(4));
        assert_eq!(follower_retry(6), Duration::from_secs(30));
        assert_eq!(follower_retry(u32::MAX), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_stops_when_its_term_ends_without_a_renewal() {
        let since = SystemTime::now();
        let (tx, mut rx) = watch::channel(Term {
            holder: Some("a".to_string()),
            ends: Some(since + Duration::from_secs(6)),
        });
        let ending =
            tokio::spawn(
                async move { term_ends(&mut rx, "a", since, Duration::from_secs(6)).await },
            );
        tokio::task::yield_now().await;
        // A renewal shows: the term now ends later.
        tx.send_replace(Term {
            holder: Some("a".to_string()),
            ends: Some(SystemTime::now() + Duration::from_secs(60)),
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!ending.is_finished(), "renewed: still leading");
        // No further renewal: the paused clock does not move SystemTime, so
        // the term is ended by writing it into the past.
        tx.send_replace(Term {
            holder: Some("a".to_string()),
            ends: Some(since + Duration::from_millis(1)),
        });
        assert_eq!(
            ending.await.unwrap(),
            "it was not renewed before the term ended"
        );
    }

    #[tokio::test]
    async fn a_leader_stops_when_the_lease_names_someone_else() {
        let since = SystemTime::now();
        let ours = Term {
            holder: Some("a".to_string()),
            ends: Some(since + Duration::from_secs(60)),
        };
        // A stale view from before the take-over is ignored ...
        let (tx, mut rx) = watch::channel(Term {
            holder: Some("b".to_string()),
            ends: Some(since - Duration::from_secs(1)),
        });
        let ending =
            tokio::spawn(
                async move { term_ends(&mut rx, "a", since, Duration::from_secs(60)).await },
            );
        tx.send_replace(ours);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ending.is_finished());
        // ... a change after it is not.
        tx.send_replace(Term {
            holder: Some("b".to_string()),
            ends: Some(since + Duration::from_secs(60)),
        });
        assert_eq!(ending.await.unwrap(), "another replica holds it");
    }
}
