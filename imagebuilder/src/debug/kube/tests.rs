//! The ephemeral-container patch against a mocked API server (tower-test): what is sent,
//! and the errors for a missing pod, a cluster without the subresource and RBAC denial.
//! `tests/test_debug.py` checks that a real API server accepts the container.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const POD_PATH: &str = "/api/v1/namespaces/mesh/pods/istiod-0";

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "istiod-0", "namespace": "mesh"},
           "spec": {"containers": [{"name": "discovery", "image": "dhi.io/istio-pilot:0.1.0"},
                                   {"name": "sidecar", "image": "example/sidecar"}]}})
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn api_status(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "message": message, "reason": "Failure", "code": code})
}

/// What the mocked API server answers to the patch.
#[derive(Clone, Copy)]
enum Cluster {
    Accepts,
    NoPod,
    NoSubresource,
    Forbidden,
}

/// A patch as the server received it: content type and body.
type SeenPatch = (String, Value);

/// Serves GET of the pod and PATCH of its ephemeralcontainers subresource; reports the patch.
async fn api_server(mut handle: Handle, cluster: Cluster, seen: oneshot::Sender<SeenPatch>) {
    let mut seen = Some(seen);
    while let Some((req, send)) = handle.next_request().await {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let response = match (method, path.as_str(), cluster) {
            (Method::GET, POD_PATH, Cluster::NoPod) => json_response(
                StatusCode::NOT_FOUND,
                &api_status(404, "pods \"istiod-0\" not found"),
            ),
            (Method::GET, POD_PATH, _) => json_response(StatusCode::OK, &pod()),
            (Method::PATCH, p, _) if p == format!("{POD_PATH}/ephemeralcontainers") => {
                let content_type = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = req.into_body().collect_bytes().await.expect("request body");
                let body: Value = serde_json::from_slice(&bytes).expect("patch is JSON");
                if let Some(tx) = seen.take() {
                    let _ = tx.send((content_type, body.clone()));
                }
                match cluster {
                    Cluster::NoSubresource => json_response(
                        StatusCode::NOT_FOUND,
                        &api_status(404, "the server could not find the requested resource"),
                    ),
                    Cluster::Forbidden => json_response(
                        StatusCode::FORBIDDEN,
                        &api_status(403, "pods \"istiod-0\" is forbidden: User \"dev\" cannot patch resource \"pods/ephemeralcontainers\""),
                    ),
                    _ => {
                        let mut p = pod();
                        p["spec"]["ephemeralContainers"] = body["spec"]["ephemeralContainers"].clone();
                        json_response(StatusCode::OK, &p)
                    }
                }
            }
            _ => json_response(StatusCode::NOT_FOUND, &api_status(404, "unexpected")),
        };
        send.send_response(response);
    }
}

fn opts(container: Option<&str>, session: Session) -> PodDebug {
    PodDebug {
        pod: "istiod-0".into(),
        container: container.map(str::to_string),
        image: "dhi.io/istio-pilot:0.1.0-dev".into(),
        pull_secret: None,
        session,
        timeout: Duration::from_secs(5),
    }
}

async fn add(cluster: Cluster, o: &PodDebug) -> (Result<String, DebugError>, Option<SeenPatch>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(api_server(handle, cluster, tx));
    let pods: Api<Pod> = Api::namespaced(Client::new(service, "mesh"), "mesh");
    let r = add_ephemeral_container(&pods, "mesh", "debugger-abcde", o).await;
    // Closing the client ends the server, which drops the sender if nothing was patched.
    drop(pods);
    (r, rx.await.ok())
}

#[tokio::test]
async fn patch_has_target_image_and_security_context() {
    let o = opts(None, Session::Interactive);
    let (r, seen) = add(Cluster::Accepts, &o).await;
    assert_eq!(
        r.expect("accepted"),
        "discovery",
        "defaults to the first container"
    );
    let (content_type, body) = seen.expect("a patch was sent");
    assert_eq!(content_type, "application/strategic-merge-patch+json");
    let ecs = body["spec"]["ephemeralContainers"]
        .as_array()
        .expect("a list");
    assert_eq!(ecs.len(), 1);
    let ec = &ecs[0];
    assert_eq!(ec["name"], "debugger-abcde");
    assert_eq!(ec["targetContainerName"], "discovery");
    assert_eq!(ec["image"], "dhi.io/istio-pilot:0.1.0-dev");
    assert_eq!(
        (ec["stdin"].clone(), ec["tty"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        ec["securityContext"]["capabilities"]["add"],
        json!(["SYS_PTRACE"])
    );
    assert_eq!(ec["securityContext"]["runAsUser"], 0);
    assert_eq!(ec["securityContext"]["runAsNonRoot"], false);
    assert_eq!(ec["command"][0], "sh");
    assert_eq!(ec["args"], json!(["bash"]));
    // Only ephemeral containers: the subresource ignores anything else.
    assert_eq!(body["spec"].as_object().map(|o| o.len()), Some(1));
}

#[tokio::test]
async fn patch_targets_the_chosen_container_and_runs_the_command() {
    let o = opts(Some("sidecar"), Session::Command(vec!["ps".into()]));
    let (r, seen) = add(Cluster::Accepts, &o).await;
    assert_eq!(r.expect("accepted"), "sidecar");
    let (_, body) = seen.expect("a patch was sent");
    let ec = &body["spec"]["ephemeralContainers"][0];
    assert_eq!(ec["targetContainerName"], "sidecar");
    assert_eq!(ec["args"], json!(["ps"]));
    assert_eq!(
        (ec["stdin"].clone(), ec["tty"].clone()),
        (json!(false), json!(false))
    );
}

#[tokio::test]
async fn errors_name_the_next_step() {
    let cases: [(Cluster, Option<&str>, &str); 4] = [
        (
            Cluster::NoPod,
            None,
            "pod istiod-0 not found in namespace mesh",
        ),
        (
            Cluster::Accepts,
            Some("nope"),
            "has no container nope (it has: discovery, sidecar)",
        ),
        (
            Cluster::NoSubresource,
            None,
            "does not serve pods/ephemeralcontainers",
        ),
        (
            Cluster::Forbidden,
            None,
            "kubectl auth can-i patch pods/ephemeralcontainers -n mesh",
        ),
    ];
    for (cluster, container, want) in cases {
        let (r, _) = add(cluster, &opts(container, Session::Interactive)).await;
        let e = r.expect_err("must fail").to_string();
        assert!(e.contains(want), "{want:?} not in {e:?}");
        assert!(e.contains("next:"), "{e}");
    }
}

#[test]
fn fresh_names_look_like_kubectls() {
    let n = fresh_name();
    assert!(
        n.starts_with("debugger-") && n.len() == "debugger-".len() + 5,
        "{n}"
    );
}
