//! The ephemeral-container patch against the fake API server: what is sent, and the
//! errors for a missing pod, a cluster without the subresource and RBAC denial.
//! `tests/test_debug.py` checks that a real API server accepts the container.

use http::Method;
use kube_fake::{failure, objects, FakeApi};
use serde_json::{json, Value};

use super::*;

const PODS: &str = "/api/v1/namespaces/mesh/pods";

fn pod() -> Value {
    objects::pod("mesh", "istiod-0")
        .container("discovery")
        .image("dhi.io/istio-pilot:0.1.0")
        .container("sidecar")
        .image("example/sidecar")
        .build()
}

/// What the API server answers to the patch.
#[derive(Clone, Copy)]
enum Cluster {
    Accepts,
    NoPod,
    NoSubresource,
    Forbidden,
}

impl Cluster {
    fn api(self) -> FakeApi {
        let api = FakeApi::new();
        if !matches!(self, Cluster::NoPod) {
            api.put(PODS, pod());
        }
        let patch = |call: &kube_fake::Call| call.method == Method::PATCH;
        match self {
            Cluster::NoSubresource => api.on(move |call| {
                patch(call).then(|| {
                    failure(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                })
            }),
            Cluster::Forbidden => api.on(move |call| {
                patch(call).then(|| {
                    failure(
                        403,
                        "Forbidden",
                        "pods \"istiod-0\" is forbidden: User \"dev\" cannot patch resource \"pods/ephemeralcontainers\"",
                    )
                })
            }),
            Cluster::Accepts | Cluster::NoPod => {}
        }
        api
    }
}

/// A patch as the server received it: content type and body.
type SeenPatch = (String, Value);

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

async fn add(
    cluster: Cluster,
    o: &PodDebug,
) -> (Result<String, DebugError>, Option<SeenPatch>, FakeApi) {
    let api = cluster.api();
    let pods: Api<Pod> = Api::namespaced(api.client(), "mesh");
    let r = add_ephemeral_container(&pods, "mesh", "debugger-abcde", o).await;
    let seen = api
        .calls()
        .into_iter()
        .find(|c| c.method == Method::PATCH)
        .map(|c| (c.content_type().to_owned(), c.body));
    (r, seen, api)
}

#[tokio::test]
async fn patch_has_target_image_and_security_context() {
    let o = opts(None, Session::Interactive);
    let (r, seen, api) = add(Cluster::Accepts, &o).await;
    assert_eq!(
        r.expect("accepted"),
        "discovery",
        "defaults to the first container"
    );
    let (content_type, body) = seen.expect("a patch was sent");
    assert_eq!(content_type, "application/strategic-merge-patch+json");
    let stored = api.get(&format!("{PODS}/istiod-0")).expect("the pod");
    assert_eq!(
        stored["spec"]["ephemeralContainers"][0]["name"],
        "debugger-abcde"
    );
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
    let (r, seen, _) = add(Cluster::Accepts, &o).await;
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
        let (r, _, _) = add(cluster, &opts(container, Session::Interactive)).await;
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
