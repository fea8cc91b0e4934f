//! Leader election against the fake API server: the record format upstream reads, expiry
//! judged by observation time, prioritized takeover, loss on failed renewals, handover.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::*;
use kube_fake::{eventually, failure, objects};

const NS: &str = "istio-system";
const CM_PATH: &str = "/api/v1/namespaces/istio-system/configmaps";
const LOCK_PATH: &str =
    "/api/v1/namespaces/istio-system/configmaps/istio-namespace-controller-election";

fn config(identity: &str, key: &str) -> ElectionConfig {
    ElectionConfig::new(true, NS, identity, key).expect("config")
}

fn record_of(api: &kube_fake::FakeApi) -> LeaderElectionRecord {
    let cm = api.get(LOCK_PATH).expect("lock exists");
    let raw = cm["metadata"]["annotations"][RECORD_ANNOTATION]
        .as_str()
        .expect("record annotation")
        .to_owned();
    serde_json::from_str(&raw).expect("record parses")
}

fn held_by(identity: &str, key: &str) -> serde_json::Value {
    let record = json!({"holderIdentity": identity, "holderKey": key, "leaseDurationSeconds": 30,
        "acquireTime": "2024-01-01T00:00:00Z", "renewTime": "2024-01-01T00:00:00Z", "leaderTransitions": 3});
    objects::config_map(NS, locks::NAMESPACE_CONTROLLER.name)
        .annotation(RECORD_ANNOTATION, &record.to_string())
        .build()
}

#[test]
fn config_follows_upstream_defaults() {
    let c = config("istiod-1", "");
    assert!(c.enabled && c.prioritized);
    assert_eq!(
        (c.identity.as_str(), c.key.as_str()),
        ("istiod-1", "default")
    );
    assert_eq!(c.lease_duration, Duration::from_secs(30));
    assert_eq!(c.renew_deadline, Duration::from_secs(15));
    assert_eq!(c.retry_period, Duration::from_millis(7500));
    assert!(!config("istiod-1", "canary").prioritized);

    let err = ElectionConfig::new(true, NS, "", "").unwrap_err();
    assert_eq!(err, ConfigError::NoIdentity);
    let off = ElectionConfig::new(false, NS, "", "").expect("disabled needs no identity");
    assert!(!off.enabled);
    assert_eq!(
        ElectionConfig::new(true, "", "a", "")
            .expect("config")
            .namespace,
        "istio-system"
    );
}

#[test]
fn record_json_matches_client_go_field_names() {
    let r = LeaderElectionRecord {
        holder_identity: "a".into(),
        holder_key: "default".into(),
        lease_duration_seconds: 30,
        acquire_time: Some("2024-01-01T00:00:00Z".into()),
        renew_time: Some("2024-01-01T00:00:01Z".into()),
        leader_transitions: 2,
    };
    let v = serde_json::to_value(&r).expect("encode");
    assert_eq!(
        v,
        json!({"holderIdentity": "a", "holderKey": "default", "leaseDurationSeconds": 30,
               "acquireTime": "2024-01-01T00:00:00Z", "renewTime": "2024-01-01T00:00:01Z",
               "leaderTransitions": 2})
    );
    // A record written by client-go without Istio's key still parses.
    let go: LeaderElectionRecord = serde_json::from_str(
        r#"{"holderIdentity":"x","leaseDurationSeconds":30,"acquireTime":"2024-01-01T00:00:00Z","renewTime":"2024-01-01T00:00:00Z","leaderTransitions":0}"#,
    )
    .expect("decode");
    assert_eq!(go.holder_key, "");
}

#[tokio::test(start_paused = true)]
async fn creates_a_free_configmap_lock_and_releases_it_on_shutdown() {
    let (client, api) = kube_fake::pair();
    let election = LeaderElection::new(client, config("pod-a", ""), locks::NAMESPACE_CONTROLLER);
    let leading = election.subscribe();
    let runs = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(election.run(shutdown.clone(), {
        let runs = runs.clone();
        move |token: CancellationToken| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                token.cancelled().await;
            }
        }
    }));
    eventually("leading", || *leading.borrow()).await;
    eventually("work started", || runs.load(Ordering::SeqCst) == 1).await;
    let r = record_of(&api);
    assert_eq!(
        (r.holder_identity.as_str(), r.holder_key.as_str()),
        ("pod-a", "default")
    );
    assert_eq!((r.lease_duration_seconds, r.leader_transitions), (30, 0));
    assert!(r.acquire_time.is_some() && r.renew_time.is_some());

    // Renewals keep the acquire time.
    let first = r.acquire_time.clone();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(record_of(&api).acquire_time, first);
    assert!(*leading.borrow());

    shutdown.cancel();
    task.await.expect("election task");
    let r = record_of(&api);
    assert_eq!(
        (r.holder_identity.as_str(), r.lease_duration_seconds),
        ("", 1)
    );
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_live_holder_and_takes_over_once_it_expires() {
    let (client, api) = kube_fake::pair();
    api.put(CM_PATH, held_by("go-istiod", "default"));
    let mut election =
        LeaderElection::new(client, config("pod-a", ""), locks::NAMESPACE_CONTROLLER);
    assert!(!election.try_acquire_or_renew().await.expect("attempt"));
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(!election.try_acquire_or_renew().await.expect("attempt"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(election.try_acquire_or_renew().await.expect("attempt"));
    let r = record_of(&api);
    assert_eq!(
        (r.holder_identity.as_str(), r.leader_transitions),
        ("pod-a", 4)
    );
}

#[tokio::test(start_paused = true)]
async fn default_revision_takes_over_from_another_revision_but_not_the_reverse() {
    let (client, api) = kube_fake::pair();
    api.put(CM_PATH, held_by("canary-istiod", "canary"));
    let mut default = LeaderElection::new(
        client.clone(),
        config("pod-a", ""),
        locks::NAMESPACE_CONTROLLER,
    );
    assert!(default.try_acquire_or_renew().await.expect("attempt"));
    assert_eq!(record_of(&api).holder_key, "default");

    let mut canary = LeaderElection::new(
        client,
        config("pod-c", "canary"),
        locks::NAMESPACE_CONTROLLER,
    );
    assert!(!canary.try_acquire_or_renew().await.expect("attempt"));
}

#[tokio::test(start_paused = true)]
async fn lease_lock_keeps_the_record_in_the_spec_and_the_key_in_an_annotation() {
    let (client, api) = kube_fake::pair();
    let mut election = LeaderElection::new(client, config("pod-a", "canary"), locks::STATUS);
    assert!(election.try_acquire_or_renew().await.expect("attempt"));
    let lease = api
        .get("/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/istio-status-leader")
        .expect("lease created");
    assert_eq!(lease["spec"]["holderIdentity"], "pod-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 30);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    assert_eq!(
        lease["metadata"]["annotations"][HOLDER_KEY_ANNOTATION],
        "canary"
    );
    // Renewal goes through a replace with the stored resource version.
    assert!(election.try_acquire_or_renew().await.expect("renew"));
}

#[tokio::test(start_paused = true)]
async fn stops_the_work_when_renewals_fail_past_the_deadline() {
    let (client, api) = kube_fake::pair();
    let election = LeaderElection::new(client, config("pod-a", ""), locks::NAMESPACE_CONTROLLER);
    let mut leading = election.subscribe();
    let stopped = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    tokio::spawn(election.run(shutdown.clone(), {
        let stopped = stopped.clone();
        move |token: CancellationToken| {
            let stopped = stopped.clone();
            async move {
                token.cancelled().await;
                stopped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }));
    leading.wait_for(|l| *l).await.expect("leads");
    api.on(|call| {
        (call.method == http::Method::PUT).then(|| failure(500, "InternalError", "etcd is down"))
    });
    leading.wait_for(|l| !*l).await.expect("loses");
    eventually("work stopped", || stopped.load(Ordering::SeqCst) == 1).await;
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn two_replicas_elect_one_leader_and_hand_over_on_shutdown() {
    let (client, _api) = kube_fake::pair();
    let a = LeaderElection::new(
        client.clone(),
        config("pod-a", ""),
        locks::NAMESPACE_CONTROLLER,
    );
    let b = LeaderElection::new(client, config("pod-b", ""), locks::NAMESPACE_CONTROLLER);
    let (mut a_leads, b_leads) = (a.subscribe(), b.subscribe());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let idle = |t: CancellationToken| async move { t.cancelled().await };
    let task_a = tokio::spawn(a.run(stop_a.clone(), idle));
    a_leads.wait_for(|l| *l).await.expect("a leads");
    tokio::spawn(b.run(stop_b.clone(), idle));
    // b keeps trying for well over a lease while a renews.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(*a_leads.borrow() && !*b_leads.borrow());

    stop_a.cancel();
    task_a.await.expect("a stops");
    eventually("b leads after a released", || *b_leads.borrow()).await;
    stop_b.cancel();
}

#[tokio::test(start_paused = true)]
async fn disabled_election_always_leads_without_touching_the_api() {
    let (client, api) = kube_fake::pair();
    let mut c = config("pod-a", "");
    c.enabled = false;
    let election = LeaderElection::new(client, c, locks::NAMESPACE_CONTROLLER);
    let leading = election.subscribe();
    let shutdown = CancellationToken::new();
    tokio::spawn(
        election.run(shutdown.clone(), |t: CancellationToken| async move {
            t.cancelled().await
        }),
    );
    eventually("leading", || *leading.borrow()).await;
    assert!(api.calls().is_empty());
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_renewal_hanging_on_the_api_server_ends_leadership_at_the_deadline() {
    let (client, api) = kube_fake::pair();
    let cfg = config("pod-a", "");
    let deadline = cfg.renew_deadline;
    let election = LeaderElection::new(client, cfg, locks::NAMESPACE_CONTROLLER);
    let mut leading = election.subscribe();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        election.run(shutdown.clone(), |t: CancellationToken| async move {
            t.cancelled().await
        }),
    );
    leading.wait_for(|l| *l).await.expect("leads");
    let acquired = Instant::now();

    // The API server stops answering: the renewal hangs.
    let before = api.calls().len();
    api.stall(|_| true);
    tokio::time::timeout(deadline * 2, leading.wait_for(|l| !*l))
        .await
        .expect("leadership ends while the renewal hangs")
        .expect("loses");
    assert!(
        acquired.elapsed() <= deadline,
        "led for {:?} without a renewal (deadline {deadline:?})",
        acquired.elapsed()
    );

    assert!(api.calls().len() > before, "a renewal was sent");

    // Shutdown is not held up by a lock release the API server never answers.
    shutdown.cancel();
    tokio::time::timeout(deadline * 2, task)
        .await
        .expect("ends on shutdown")
        .expect("task");
}
