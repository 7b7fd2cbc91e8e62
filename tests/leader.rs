//! Lease election against the test API server, whose Leases answer stale writes with 409
//! Conflict like the real one: one leader of two, takeover only after the Lease expired by the
//! standby's own clock, an immediate takeover after a release, and one winner of a race.

mod support;

use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_event_pipe::ha::{Attempt as Role, Elector, LeaderError, LeaseConfig};
use support::fake_api::ApiServer;

const NS: &str = "kube-event-pipe";
const LEASE_DURATION: Duration = Duration::from_millis(1500);
const RETRY: Duration = Duration::from_millis(100);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn elector(server: &ApiServer, identity: &str) -> Elector {
    elector_of(server, identity, "kube-event-pipe").await
}

async fn elector_of(server: &ApiServer, identity: &str, lease: &str) -> Elector {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    Elector::new(
        client,
        LeaseConfig {
            name: lease.into(),
            namespace: NS.into(),
            identity: identity.into(),
            lease_duration: LEASE_DURATION,
            renew_deadline: Duration::from_secs(1),
            retry_period: RETRY,
        },
    )
}

fn holder(role: &Role) -> Option<&str> {
    match role {
        Role::Leader(_) => Some("me"),
        Role::Standby(o) => o.holder.as_deref(),
    }
}

#[test]
fn one_of_two_leads_and_the_other_reads_its_watermark() {
    let server = ApiServer::start();
    runtime().block_on(async {
        let (mut a, mut b) = (elector(&server, "a").await, elector(&server, "b").await);
        assert!(matches!(
            a.try_acquire_or_renew(None).await.unwrap(),
            Role::Leader(_)
        ));
        let seen = b.try_acquire_or_renew(None).await.unwrap();
        assert_eq!(holder(&seen), Some("a"));
        assert!(matches!(
            a.try_acquire_or_renew(Some(41)).await.unwrap(),
            Role::Leader(_)
        ));
        let Role::Standby(seen) = b.try_acquire_or_renew(None).await.unwrap() else {
            panic!("b took a renewed Lease");
        };
        assert_eq!(
            (seen.holder.as_deref(), seen.watermark),
            (Some("a"), Some(41))
        );
    });
    let lease = server.lease(NS, "kube-event-pipe").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
}

#[test]
fn a_standby_takes_over_only_after_the_lease_expired_by_its_own_clock() {
    let server = ApiServer::start();
    runtime().block_on(async {
        let (mut a, mut b) = (elector(&server, "a").await, elector(&server, "b").await);
        a.try_acquire_or_renew(Some(7)).await.unwrap();
        // a stops renewing (it died); b polls every retry period.
        let first_seen = Instant::now();
        let deadline = first_seen + Duration::from_secs(10);
        let previous = loop {
            match b.try_acquire_or_renew(None).await.unwrap() {
                Role::Leader(previous) => break previous,
                Role::Standby(_) => {
                    assert!(Instant::now() < deadline, "b never took over");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let waited = first_seen.elapsed();
        // The server's lease duration is whole seconds (1 s here); never earlier than that.
        assert!(
            waited >= Duration::from_secs(1),
            "took over after {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(1) + 5 * RETRY,
            "took over after {waited:?}"
        );
        assert_eq!(
            (previous.holder.as_deref(), previous.watermark),
            (Some("a"), Some(7))
        );
        // a comes back: it sees b's fresh Lease and stays standby.
        let seen = a.try_acquire_or_renew(None).await.unwrap();
        assert_eq!(holder(&seen), Some("b"));
    });
    let lease = server.lease(NS, "kube-event-pipe").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[test]
fn a_released_lease_is_taken_at_once_with_the_final_watermark() {
    let server = ApiServer::start();
    runtime().block_on(async {
        let (mut a, mut b) = (elector(&server, "a").await, elector(&server, "b").await);
        a.try_acquire_or_renew(Some(5)).await.unwrap();
        assert_eq!(
            holder(&b.try_acquire_or_renew(None).await.unwrap()),
            Some("a")
        );
        a.release(Some(9)).await.unwrap();
        let started = Instant::now();
        let Role::Leader(previous) = b.try_acquire_or_renew(None).await.unwrap() else {
            panic!("a released Lease was not taken");
        };
        assert!(started.elapsed() < LEASE_DURATION);
        assert_eq!((previous.holder, previous.watermark), (None, Some(9)));
        // A release by a replica that no longer holds the Lease changes nothing.
        a.release(Some(1)).await.unwrap();
        assert!(matches!(
            b.try_acquire_or_renew(None).await.unwrap(),
            Role::Leader(_)
        ));
    });
}

#[test]
fn a_release_that_meets_a_late_renewal_reads_again_and_still_releases() {
    let server = ApiServer::start();
    runtime().block_on(async {
        let (mut a, mut b) = (elector(&server, "a").await, elector(&server, "b").await);
        a.try_acquire_or_renew(Some(5)).await.unwrap();
        // A renewal `a` gave up waiting for lands between the release's read and its write.
        server.late_lease_writes(1);
        let conflicts = server.lease_conflicts();
        a.release(Some(9)).await.unwrap();
        assert_eq!(
            server.lease_conflicts(),
            conflicts + 1,
            "the first write met the late one"
        );
        let started = Instant::now();
        let Role::Leader(previous) = b.try_acquire_or_renew(None).await.unwrap() else {
            panic!("the Lease was left held after a conflicting release");
        };
        assert!(started.elapsed() < LEASE_DURATION);
        assert_eq!((previous.holder, previous.watermark), (None, Some(9)));
    });
}

#[test]
fn a_release_that_keeps_conflicting_says_so_and_names_the_lease() {
    let server = ApiServer::start();
    runtime().block_on(async {
        let mut a = elector(&server, "a").await;
        a.try_acquire_or_renew(Some(5)).await.unwrap();
        server.late_lease_writes(100);
        let err = a.release(Some(9)).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("{NS}/kube-event-pipe")) && err.contains("expires"),
            "{err}"
        );
    });
}

#[test]
fn of_two_racing_for_a_new_lease_exactly_one_wins() {
    let server = ApiServer::start();
    runtime().block_on(async {
        for round in 0..20 {
            let name = format!("race-{round}");
            let mut a = elector_of(&server, "a", &name).await;
            let mut b = elector_of(&server, "b", &name).await;
            let (ra, rb) = tokio::join!(a.try_acquire_or_renew(None), b.try_acquire_or_renew(None));
            let leaders = [ra.unwrap(), rb.unwrap()]
                .iter()
                .filter(|r| matches!(r, Role::Leader(_)))
                .count();
            assert_eq!(leaders, 1, "round {round}");
        }
    });
}

#[test]
fn a_forbidden_lease_names_the_fix() {
    let server = ApiServer::start();
    server.forbid_resource("leases");
    let err = runtime().block_on(async {
        let mut a = elector(&server, "a").await;
        a.try_acquire_or_renew(None).await.unwrap_err()
    });
    assert!(matches!(err, LeaderError::Forbidden { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("not allowed to get the lease kube-event-pipe/kube-event-pipe: ")
            && text.contains("grant get, create and update on leases"),
        "{text}"
    );
}
