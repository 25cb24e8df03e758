//! Leader election: replicas of the operator, in this process, share the Lease
//! `telemetry-operator` in the test namespace. Only the holder reconciles; a
//! follower takes over when the leader dies (once its term has ended) or shuts
//! down (at once), and a leader that loses the Lease stops.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use telemetry_operator::Error;
use telemetry_operator::config::DEFAULT_LEASE_NAME;
use telemetry_operator::lease::Term;
use telemetry_testenv::wait_for;

use crate::support::{Operator, World, election};

/// A short term, so that a take-over after a crash is quick to wait for.
const DURATION: Duration = Duration::from_secs(6);
const GRACE: Duration = Duration::from_secs(2);
/// Slack for a loaded machine on top of a term.
const MARGIN: Duration = Duration::from_secs(10);

/// When the Lease's current term ends, and when it was acquired.
fn term_and_acquired(lease: &Lease) -> (Option<SystemTime>, Option<SystemTime>) {
    let acquired = lease
        .spec
        .as_ref()
        .and_then(|s| s.acquire_time.as_ref())
        .map(|t| SystemTime::from(t.0));
    (Term::of(lease).ends, acquired)
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_follower_takes_over_when_it_dies()
-> anyhow::Result<()> {
    let world = World::without_operator("tpl-leader").await?;
    let client = || world.client.clone();
    let a = Operator::start_elected(
        client(),
        world.ns(),
        election(world.ns(), "operator-a", DURATION, GRACE),
    )
    .await?;
    a.wait_leading(DURATION + MARGIN).await?;
    let b = Operator::start_elected(
        client(),
        world.ns(),
        election(world.ns(), "operator-b", DURATION, GRACE),
    )
    .await?;
    assert_eq!(world.lease_holder().await?.as_deref(), Some("operator-a"));
    assert_eq!(b.metric("telemetry_operator_leader").await?, 0.0);

    world
        .apply_and_wait_ready("pipeline-minimal.yaml", "minimal")
        .await?;
    assert_eq!(a.metric("telemetry_operator_leader").await?, 1.0);
    assert!(
        a.metric("telemetry_operator_reconciliations_total{result=\"ok\"}")
            .await?
            >= 1.0
    );
    assert!(a.child_writes().await? >= 1.0, "A created the children");
    assert_eq!(b.metric("telemetry_operator_leader").await?, 0.0);
    assert_eq!(
        b.sum("telemetry_operator_reconciliations_total").await?,
        0.0,
        "the follower reconciles nothing"
    );
    assert_eq!(b.child_writes().await?, 0.0, "the follower writes nothing");
    assert_eq!(
        b.metric("telemetry_operator_status_writes_total").await?,
        0.0
    );

    // A crashes: nothing releases the Lease, B waits for A's term to end.
    let (term_ends, _) = term_and_acquired(&world.lease().await?.expect("the Lease"));
    let term_ends = term_ends.expect("A's term");
    a.kill().await?;
    let died = Instant::now();
    b.wait_leading(DURATION + MARGIN).await?;
    println!("B leads {:?} after A died", died.elapsed());
    let lease = world.lease().await?.expect("the Lease");
    assert_eq!(
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("operator-b")
    );
    let (_, acquired) = term_and_acquired(&lease);
    assert!(
        acquired.expect("acquireTime") >= term_ends,
        "B took the Lease only once A's term had ended"
    );

    // B reconciles: a deleted child comes back.
    let configmaps = world.api::<ConfigMap>();
    let before = configmaps.get("minimal-ingest").await?.uid();
    configmaps
        .delete("minimal-ingest", &DeleteParams::default())
        .await?;
    wait_for(
        "B to recreate the ingest ConfigMap",
        Duration::from_secs(60),
        || {
            let configmaps = configmaps.clone();
            let before = before.clone();
            async move {
                let cm = configmaps.get_opt("minimal-ingest").await.ok()??;
                (cm.uid() != before).then_some(())
            }
        },
    )
    .await?;
    assert!(b.child_writes().await? >= 1.0);

    // A clean stop releases the Lease.
    b.stop().await?;
    assert_eq!(world.lease_holder().await?, None);
    world.ns.cleanup().await
}

#[tokio::test]
async fn a_clean_shutdown_hands_the_lease_over_at_once() -> anyhow::Result<()> {
    // A long term: a follower that waited for it would take over no sooner
    // than `grace` (5 s) after the stop, and usually much later.
    let (duration, grace) = (Duration::from_secs(15), Duration::from_secs(5));
    let world = World::without_operator("tpl-handover").await?;
    let a = Operator::start_elected(
        world.client.clone(),
        world.ns(),
        election(world.ns(), "operator-a", duration, grace),
    )
    .await?;
    a.wait_leading(duration + MARGIN).await?;
    let b = Operator::start_elected(
        world.client.clone(),
        world.ns(),
        election(world.ns(), "operator-b", duration, grace),
    )
    .await?;
    // Let B settle into following: its lease manager would look at the Lease
    // again only when A's term ends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.metric("telemetry_operator_leader").await?, 0.0);

    let (term_ends, _) = term_and_acquired(&world.lease().await?.expect("the Lease"));
    let term_ends = term_ends.expect("A's term");
    let stopping = Instant::now();
    a.stop().await?;
    b.wait_leading(duration + MARGIN).await?;
    let took = stopping.elapsed();
    println!("B leads {took:?} after A was told to stop");
    let lease = world.lease().await?.expect("the Lease");
    assert_eq!(
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("operator-b")
    );
    let (_, acquired) = term_and_acquired(&lease);
    assert!(
        acquired.expect("acquireTime") < term_ends,
        "B took the Lease before A's term would have ended ({took:?} after the stop)"
    );
    assert!(took < grace, "the hand-over took {took:?}");
    b.stop().await?;
    world.ns.cleanup().await
}

#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_and_run_returns_an_error() -> anyhow::Result<()> {
    let world = World::without_operator("tpl-lost").await?;
    let a = Operator::start_elected(
        world.client.clone(),
        world.ns(),
        election(world.ns(), "operator-a", DURATION, GRACE),
    )
    .await?;
    a.wait_leading(DURATION + MARGIN).await?;

    // Another holder shows in the Lease, as when A's renewals stopped getting
    // through and a follower took over.
    let now = serde_json::to_value(MicroTime(Timestamp::now()))?;
    let intruder = json!({"spec": {
        "holderIdentity": "intruder",
        "acquireTime": now,
        "renewTime": now,
        "leaseDurationSeconds": 60,
    }});
    world
        .api::<Lease>()
        .patch(
            DEFAULT_LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(&intruder),
        )
        .await?;
    match a.exited(DURATION).await? {
        Err(Error::LeadershipLost { reason, .. }) => println!("A stopped: {reason}"),
        other => anyhow::bail!("run() should fail with LeadershipLost, not {other:?}"),
    }
    assert_eq!(world.lease_holder().await?.as_deref(), Some("intruder"));
    world.ns.cleanup().await
}
