//! ADS protocol tests: a tonic client against an in-process istiod serving a temp config dir.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use kube_fake::objects::{self, manifests};
use pilot::app::App;
use pilot::args::DiscoveryArgs;
use pilot::settings::{Env, Settings};
use pilot::testing::node;
use pilot::xds::types;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: DiscoveryArgs,
}

/// Service `echo.demo` (gRPC on 7070) with an endpoint at each of `addresses`.
fn mesh(addresses: &[&str]) -> String {
    let slice = addresses.iter().fold(
        objects::endpoint_slice("demo", "echo-1", "echo").port(7070, "grpc"),
        |slice, address| slice.endpoint(address),
    );
    let service = objects::service("demo", "echo")
        .cluster_ip("10.96.0.1")
        .port(7070, "grpc");
    manifests(&[service.build(), slice.build()])
}

const ECHO_CLUSTER: &str = "outbound|7070||echo.demo.svc.cluster.local";
const SIDECAR_ID: &str = "sidecar~10.9.0.1~app-0.demo~demo.svc.cluster.local";

async fn start(dir: &Path) -> App {
    let cli = Cli::parse_from([
        "test",
        "--registries=",
        "--configDir",
        dir.to_str().unwrap(),
        "--meshConfig",
        "/nonexistent/mesh",
        "--grpcAddr",
        "127.0.0.1:0",
        "--httpAddr",
        "127.0.0.1:0",
        "--monitoringAddr",
        "127.0.0.1:0",
        "--secureGRPCAddr=",
        "--httpsAddr=",
    ]);
    let env = Env::from_pairs([
        ("PILOT_DEBOUNCE_AFTER", "10ms"),
        ("PILOT_DEBOUNCE_MAX", "1s"),
    ]);
    App::start(cli.args, Settings::from_env(&env).unwrap())
        .await
        .unwrap()
}

async fn client(app: &App) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{}", app.grpc_addr.unwrap()))
        .await
        .unwrap()
}

/// A SotW stream driven by the test.
struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(
        app: &App,
        node_id: &str,
        first: DiscoveryRequest,
    ) -> Result<Sotw, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut first = first;
        first.node = Some(node(node_id, &[("ISTIO_VERSION", "1.32.0")]));
        tx.send(first).await.unwrap();
        let rx = client(app)
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Sotw { tx, rx })
    }

    async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> Result<DiscoveryResponse, tonic::Status> {
        match tokio::time::timeout(DEADLINE, self.rx.message()).await {
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within {DEADLINE:?}"),
        }
    }

    async fn ack(&self, resp: &DiscoveryResponse, names: &[&str]) {
        self.send(request(&resp.type_url, names, &resp.nonce)).await;
    }
}

fn request(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

fn cluster_names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .collect()
}

fn endpoint_count(resp: &DiscoveryResponse) -> usize {
    resp.resources
        .iter()
        .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).unwrap())
        .flat_map(|c| c.endpoints)
        .map(|l| l.lb_endpoints.len())
        .sum()
}

fn write_mesh(dir: &Path) {
    std::fs::write(dir.join("mesh.yaml"), mesh(&["10.0.0.1", "10.0.0.2"])).unwrap();
}

#[tokio::test]
async fn sotw_ack_then_subscription_change() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    let mut s = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    let cds = s.recv().await.unwrap();
    assert_eq!(cds.type_url, types::CLUSTER);
    assert!(
        cluster_names(&cds).contains(&ECHO_CLUSTER.to_string()),
        "{:?}",
        cluster_names(&cds)
    );
    assert!(!cds.nonce.is_empty() && !cds.version_info.is_empty());
    s.ack(&cds, &[]).await;

    // The ACK gets no answer: the next response is the EDS one asked for after it.
    s.send(request(types::ENDPOINT, &[ECHO_CLUSTER], "")).await;
    let eds = s.recv().await.unwrap();
    assert_eq!(eds.type_url, types::ENDPOINT);
    assert_eq!(endpoint_count(&eds), 2);
    s.ack(&eds, &[ECHO_CLUSTER]).await;

    // Unsubscribing (empty names after named ones) sends nothing; a new name is answered.
    s.send(request(types::ENDPOINT, &[], &eds.nonce)).await;
    s.send(request(types::LISTENER, &[], "")).await;
    let lds = s.recv().await.unwrap();
    assert_eq!(lds.type_url, types::LISTENER);
}

#[tokio::test]
async fn nack_keeps_last_good_config_and_pushes_continue() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    let mut s = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    let cds = s.recv().await.unwrap();
    let mut nack = request(types::CLUSTER, &[], &cds.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "cluster rejected".into(),
        details: vec![],
    });
    s.send(nack).await;

    // The NACK is recorded (visible to /debug/syncz) and nothing is resent for it.
    let conn = wait_for(|| {
        app.discovery.connections().into_iter().find(|c| {
            c.watches()
                .get(types::CLUSTER)
                .is_some_and(|w| w.status() == "ERROR")
        })
    })
    .await;
    assert_eq!(
        conn.watches()[types::CLUSTER].last_error.as_deref(),
        Some("code 3: cluster rejected")
    );

    // A later config change is still pushed.
    std::fs::write(
        dir.path().join("more.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: demo}\nspec: {clusterIP: 10.96.0.2, ports: [{name: http, port: 80}]}\n",
    )
    .unwrap();
    let pushed = s.recv().await.unwrap();
    assert_eq!(pushed.type_url, types::CLUSTER);
    assert!(
        cluster_names(&pushed).contains(&"outbound|80||extra.demo.svc.cluster.local".to_string())
    );
    assert_ne!(pushed.version_info, cds.version_info);
}

#[tokio::test]
async fn endpoint_change_pushes_eds_only() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    let mut s = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    let cds = s.recv().await.unwrap();
    s.ack(&cds, &[]).await;
    s.send(request(types::ENDPOINT, &[ECHO_CLUSTER], "")).await;
    let eds = s.recv().await.unwrap();
    s.ack(&eds, &[ECHO_CLUSTER]).await;

    std::fs::write(
        dir.path().join("mesh.yaml"),
        mesh(&["10.0.0.1", "10.0.0.3", "10.0.0.4"]),
    )
    .unwrap();
    let pushed = s.recv().await.unwrap();
    assert_eq!(
        pushed.type_url,
        types::ENDPOINT,
        "endpoint-only change pushes EDS, not CDS"
    );
    assert_eq!(endpoint_count(&pushed), 3);
}

/// `mesh(addresses)` plus service `other.demo` with one endpoint that never changes.
fn mesh_with_other(addresses: &[&str]) -> String {
    let other = [
        objects::service("demo", "other")
            .cluster_ip("10.96.0.2")
            .port(7070, "grpc")
            .build(),
        objects::endpoint_slice("demo", "other-1", "other")
            .port(7070, "grpc")
            .endpoint("10.0.1.1")
            .build(),
    ];
    format!("{}---\n{}", mesh(addresses), manifests(&other))
}

#[tokio::test]
async fn endpoint_change_sends_only_the_changed_load_assignments() {
    const OTHER_CLUSTER: &str = "outbound|7070||other.demo.svc.cluster.local";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, mesh_with_other(&["10.0.0.1"])).unwrap();
    let app = start(dir.path()).await;
    let mut s = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    let cds = s.recv().await.unwrap();
    s.ack(&cds, &[]).await;
    let both = [ECHO_CLUSTER, OTHER_CLUSTER];
    s.send(request(types::ENDPOINT, &both, "")).await;
    let eds = s.recv().await.unwrap();
    assert_eq!(
        eds.resources.len(),
        2,
        "the first response has every subscribed name"
    );
    s.ack(&eds, &both).await;

    std::fs::write(&file, mesh_with_other(&["10.0.0.1", "10.0.0.2"])).unwrap();
    let pushed = s.recv().await.unwrap();
    assert_eq!(pushed.type_url, types::ENDPOINT);
    let names: Vec<String> = pushed
        .resources
        .iter()
        .map(|a| {
            ClusterLoadAssignment::decode(a.value.as_slice())
                .unwrap()
                .cluster_name
        })
        .collect();
    assert_eq!(names, [ECHO_CLUSTER], "only the changed cluster is resent");
    assert_eq!(endpoint_count(&pushed), 2);
    s.ack(&pushed, &both).await;

    // A config change is a full push: every subscribed name again.
    std::fs::write(
        &file,
        format!(
            "{}---\n{}",
            mesh_with_other(&["10.0.0.1", "10.0.0.2"]),
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {name: echo, namespace: demo}\n\
             spec: {host: echo.demo.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: RANDOM}}}\n"
        ),
    )
    .unwrap();
    let eds = loop {
        let r = s.recv().await.unwrap();
        let names: Vec<&str> = if r.type_url == types::ENDPOINT {
            both.to_vec()
        } else {
            vec![]
        };
        s.ack(&r, &names).await;
        if r.type_url == types::ENDPOINT {
            break r;
        }
    };
    assert_eq!(
        eds.resources.len(),
        2,
        "a full push resends every load assignment"
    );
}

#[tokio::test]
async fn a_push_that_changes_nothing_of_a_type_does_not_resend_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, mesh(&["10.0.0.1"])).unwrap();
    let app = start(dir.path()).await;
    let mut s = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    let cds = s.recv().await.unwrap();
    s.ack(&cds, &[]).await;
    s.send(request(types::ENDPOINT, &[ECHO_CLUSTER], "")).await;
    let eds = s.recv().await.unwrap();
    s.ack(&eds, &[ECHO_CLUSTER]).await;

    // A routing change is a full push, but neither clusters nor endpoints change.
    let route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
        metadata: {name: echo, namespace: demo}\n\
        spec: {hosts: [echo.demo.svc.cluster.local], http: [{timeout: 5s, route: [{destination: {host: echo.demo.svc.cluster.local}}]}]}\n";
    std::fs::write(&file, format!("{}---\n{route}", mesh(&["10.0.0.1"]))).unwrap();
    let monitoring = app.monitoring_addr.unwrap();
    let config_pushed = "pilot_push_triggers{type=\"config\"} 1";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(monitoring, "/metrics").await;
        if metrics.contains(config_pushed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains(config_pushed), "{metrics}");
    // Then an endpoint change: the next response the proxy sees is EDS, never CDS.
    std::fs::write(
        &file,
        format!("{}---\n{route}", mesh(&["10.0.0.1", "10.0.0.2"])),
    )
    .unwrap();
    let next = s.recv().await.unwrap();
    assert_eq!(
        next.type_url,
        types::ENDPOINT,
        "unchanged clusters are not resent"
    );
    assert_eq!(endpoint_count(&next), 2);
}

#[tokio::test]
async fn unknown_type_gets_empty_response() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    let t = "type.googleapis.com/example.Unknown";
    let mut s = Sotw::open(&app, SIDECAR_ID, request(t, &["x"], ""))
        .await
        .unwrap();
    let resp = s.recv().await.unwrap();
    assert_eq!(resp.type_url, t);
    assert!(resp.resources.is_empty());
}

#[tokio::test]
async fn malformed_node_id_is_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    let mut s = Sotw::open(&app, "not-a-node-id", request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    let status = s.recv().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("want 4 parts"),
        "{}",
        status.message()
    );
    // The server keeps serving.
    let mut ok = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    assert_eq!(ok.recv().await.unwrap().type_url, types::CLUSTER);
}

#[tokio::test]
async fn reconnect_gets_full_config_again() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    let mut s = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    let first = s.recv().await.unwrap();
    drop(s);
    wait_for(|| app.discovery.connections().is_empty().then_some(())).await;
    // A reconnecting proxy sends its last version and nonce from the old stream.
    let mut again = request(types::CLUSTER, &[], &first.nonce);
    again.version_info = first.version_info.clone();
    let mut s = Sotw::open(&app, SIDECAR_ID, again).await.unwrap();
    let resp = s.recv().await.unwrap();
    assert_eq!(cluster_names(&resp), cluster_names(&first));
}

#[tokio::test]
async fn delta_sends_changes_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node(SIDECAR_ID, &[])),
        type_url: types::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut rx: Streaming<DeltaDiscoveryResponse> = client(&app)
        .await
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = recv_delta(&mut rx).await;
    let names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&ECHO_CLUSTER), "{names:?}");
    assert!(first.resources.iter().all(|r| !r.version.is_empty()));
    tx.send(DeltaDiscoveryRequest {
        type_url: types::CLUSTER.into(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Adding a service sends just its cluster.
    let extra = "apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: demo}\nspec: {clusterIP: 10.96.0.2, ports: [{name: http, port: 80}]}\n";
    std::fs::write(dir.path().join("extra.yaml"), extra).unwrap();
    let added = recv_delta(&mut rx).await;
    let names: Vec<&str> = added.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["outbound|80||extra.demo.svc.cluster.local"]);
    assert!(added.removed_resources.is_empty());

    // Removing it names it in removed_resources.
    std::fs::remove_file(dir.path().join("extra.yaml")).unwrap();
    let removed = recv_delta(&mut rx).await;
    assert!(removed.resources.is_empty());
    assert_eq!(
        removed.removed_resources,
        ["outbound|80||extra.demo.svc.cluster.local"]
    );
}

#[tokio::test]
async fn malformed_file_is_reported_and_last_good_config_serves() {
    let dir = tempfile::tempdir().unwrap();
    write_mesh(dir.path());
    let app = start(dir.path()).await;
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: [\n",
    )
    .unwrap();
    let errors = wait_for(|| {
        let snap = app.store.snapshot();
        (!snap.errors.is_empty()).then_some(snap.errors)
    })
    .await;
    assert!(errors[0].error.contains("invalid YAML"), "{errors:?}");
    let body = http_get(app.http_addr.unwrap(), "/debug/configz").await;
    assert!(
        body.contains("invalid YAML") && body.contains("\"echo\""),
        "{body}"
    );
    let mut s = Sotw::open(&app, SIDECAR_ID, request(types::CLUSTER, &[], ""))
        .await
        .unwrap();
    assert!(cluster_names(&s.recv().await.unwrap()).contains(&ECHO_CLUSTER.to_string()));
    let metrics = http_get(app.monitoring_addr.unwrap(), "/metrics").await;
    assert!(metrics.contains("pilot_config_file_errors 1"), "{metrics}");
    assert!(
        metrics.contains("pilot_xds_pushes{type=\"cds\"}"),
        "{metrics}"
    );
}

async fn recv_delta(rx: &mut Streaming<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    tokio::time::timeout(DEADLINE, rx.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    out
}
