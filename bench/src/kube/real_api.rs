//! A real Kubernetes API server instead of the fake: the benchmark's objects are written
//! there through the API (server-side apply), istiod gets a ServiceAccount of its own, and
//! its requests are counted from the API server's audit log.
//!
//! Objects the fake would hold as given are adapted to a real server: Services get their
//! cluster IP from the server (`10.96.0.1` is the `kubernetes` Service's), and a Pod's
//! status, which a create ignores, is applied to its `status` subresource.
//!
//! Each run starts istiod as on a new cluster: what an istiod of an earlier run left — the
//! CA Secret, the `istio-ca-root-cert` ConfigMaps and the leader-election locks, which a
//! killed istiod holds until they expire — is deleted first. The API server is therefore
//! one for benchmarks only.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource, ResourceExt};
use pilot::kube::leader::RECORD_ANNOTATION;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::objects;

/// The field manager of everything the benchmark applies.
const MANAGER: &str = "kube-load";
/// Objects (or services, of three objects each) written at a time while loading: at most
/// 48 requests in flight, well inside the server's default `--max-requests-inflight` (400).
const IN_FLIGHT: usize = 16;
/// How long istiod's token lives: longer than any run.
const TOKEN_SECONDS: i64 = 6 * 3600;

/// A real API server reached with the admin kubeconfig the benchmark was given.
pub struct RealApi {
    client: Client,
    /// The API server's URL, for the report.
    pub server: String,
    /// The CA that signs the server's certificate, as kubeconfig fields.
    ca: Value,
    /// The user istiod runs as (`system:serviceaccount:<ns>:<name>`).
    pub user: String,
    audit: Option<AuditLog>,
}

/// The audit log and where in it this run began.
struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl RealApi {
    /// Connects with the admin kubeconfig at `path`; istiod will run as ServiceAccount
    /// `account` in istiod's namespace; `audit_log` is the server's audit log, if readable.
    pub async fn connect(path: &Path, account: &str, audit_log: Option<PathBuf>) -> Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
        let context_name = kubeconfig
            .current_context
            .clone()
            .ok_or_else(|| anyhow!("{} has no current-context", path.display()))?;
        let cluster_name = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| anyhow!("context {context_name} not found in {}", path.display()))?;
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| anyhow!("cluster {cluster_name} not found in {}", path.display()))?;
        let server = cluster
            .server
            .clone()
            .ok_or_else(|| anyhow!("cluster {cluster_name} has no server"))?;
        let ca = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) => json!({ "certificate-authority-data": data }),
            (None, Some(file)) => {
                let file = path.parent().unwrap_or(Path::new(".")).join(file);
                json!({ "certificate-authority": file })
            }
            (None, None) => json!({}),
        };
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .context("loading the kubeconfig")?;
        let client = Client::try_from(config).context("building the API client")?;
        let audit = audit_log.map(|path| AuditLog { path, offset: 0 });
        Ok(RealApi {
            client,
            server,
            ca,
            user: format!(
                "system:serviceaccount:{}:{account}",
                objects::ISTIO_NAMESPACE
            ),
            audit,
        })
    }

    /// Applies the cluster objects and `services` services; removes service `new` (and its
    /// EndpointSlice and Pod) left by an earlier run, so that it can be created again, and
    /// what an earlier istiod left (`reset_istiod_state`).
    pub async fn load(&self, namespaces: usize, services: usize, new: usize) -> Result<()> {
        // Namespaces first: everything else lives in them.
        let (namespace_objects, rest): (Vec<Value>, Vec<Value>) = objects::cluster(namespaces)
            .into_iter()
            .chain(objects::istiod_config())
            .partition(|o| o["kind"] == "Namespace");
        for batch in [namespace_objects, rest] {
            futures::stream::iter(batch.into_iter().map(|o| self.apply(o)))
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<_>>()
                .await?;
        }
        futures::stream::iter((0..services).map(|i| self.create_service(i, namespaces)))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        for object in objects::service(new, namespaces) {
            self.delete(&object).await?;
        }
        self.reset_istiod_state().await
    }

    /// Deletes the CA Secret, every `istio-ca-root-cert` ConfigMap, and the leader-election
    /// locks (ConfigMaps with a leader record, Leases) in istiod's namespace.
    async fn reset_istiod_state(&self) -> Result<()> {
        let ns = objects::ISTIO_NAMESPACE;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        delete_named(&secrets, "istio-ca-secret").await?;
        let root_certs = ListParams::default().fields("metadata.name=istio-ca-root-cert");
        for cm in Api::<ConfigMap>::all(self.client.clone())
            .list(&root_certs)
            .await
            .context("listing the root-certificate ConfigMaps")?
        {
            let namespace = cm.namespace().unwrap_or_default();
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
            delete_named(&api, &cm.name_any()).await?;
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        for cm in config_maps
            .list(&ListParams::default())
            .await
            .context("listing ConfigMaps")?
        {
            if cm.annotations().contains_key(RECORD_ANNOTATION) {
                delete_named(&config_maps, &cm.name_any()).await?;
            }
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), ns);
        for lease in leases
            .list(&ListParams::default())
            .await
            .context("listing Leases")?
        {
            delete_named(&leases, &lease.name_any()).await?;
        }
        Ok(())
    }

    /// Writes service `i`: its Service, EndpointSlice and Pod (with status), concurrently.
    pub async fn create_service(&self, i: usize, namespaces: usize) -> Result<()> {
        futures::future::try_join_all(
            objects::service(i, namespaces)
                .into_iter()
                .map(|o| self.apply(o)),
        )
        .await?;
        Ok(())
    }

    /// Deletes service `i` (Service, EndpointSlice, Pod) where it exists.
    pub async fn delete_service(&self, i: usize, namespaces: usize) -> Result<()> {
        futures::future::try_join_all(
            objects::service(i, namespaces)
                .iter()
                .map(|o| self.delete(o)),
        )
        .await?;
        Ok(())
    }

    /// Server-side applies one object (and its status, for a Pod).
    pub async fn apply(&self, mut object: Value) -> Result<()> {
        let (api, name) = self.api_for(&object)?;
        if object["kind"] == "Service" {
            if let Some(spec) = object["spec"].as_object_mut() {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        }
        let status = match object.as_object_mut() {
            Some(o) if o.get("kind").and_then(Value::as_str) == Some("Pod") => o.remove("status"),
            _ => None,
        };
        let params = PatchParams::apply(MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {name}", object["kind"]))?;
        if let Some(status) = status {
            let patch = json!({
                "apiVersion": object["apiVersion"],
                "kind": object["kind"],
                "metadata": {
                    "name": object["metadata"]["name"],
                    "namespace": object["metadata"]["namespace"],
                },
                "status": status,
            });
            api.patch_status(&name, &params, &Patch::Apply(&patch))
                .await
                .with_context(|| format!("applying the status of Pod {name}"))?;
        }
        Ok(())
    }

    /// Deletes one object if it exists.
    pub async fn delete(&self, object: &Value) -> Result<()> {
        let (api, name) = self.api_for(object)?;
        delete_named(&api, &name).await
    }

    fn api_for(&self, object: &Value) -> Result<(Api<DynamicObject>, String)> {
        let (group, version) = match object["apiVersion"].as_str() {
            Some(v) => v.rsplit_once('/').unwrap_or(("", v)),
            None => bail!("object without apiVersion: {object}"),
        };
        let kind = object["kind"]
            .as_str()
            .ok_or_else(|| anyhow!("object without kind: {object}"))?;
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("{kind} without a name"))?
            .to_owned();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        Ok((api, name))
    }

    /// Creates ServiceAccount `account` bound to `cluster-admin`, and writes a kubeconfig
    /// at `path` that authenticates with a fresh token of it.
    pub async fn istiod_kubeconfig(&self, account: &str, path: &Path) -> Result<()> {
        let ns = objects::ISTIO_NAMESPACE;
        let params = PatchParams::apply(MANAGER).force();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let account_object = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": account, "namespace": ns },
        });
        accounts
            .patch(account, &params, &Patch::Apply(&account_object))
            .await
            .with_context(|| format!("applying ServiceAccount {ns}/{account}"))?;
        let binding = ClusterRoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some(account.to_owned()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "ClusterRole".to_owned(),
                name: "cluster-admin".to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: account.to_owned(),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .patch(account, &params, &Patch::Apply(&binding))
            .await
            .with_context(|| format!("binding {account} to cluster-admin"))?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token of {ns}/{account}"))?
            .status
            .ok_or_else(|| anyhow!("TokenRequest without a status"))?
            .token;
        let mut cluster = json!({ "server": self.server });
        if let (Some(c), Some(ca)) = (cluster.as_object_mut(), self.ca.as_object()) {
            c.extend(ca.clone());
        }
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{ "name": "bench", "cluster": cluster }],
            "users": [{ "name": account, "user": { "token": token } }],
            "contexts": [{ "name": "bench", "context": {
                "cluster": "bench", "user": account, "namespace": ns } }],
            "current-context": "bench",
        });
        std::fs::write(path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Marks the end of the audit log: requests are counted from here on.
    pub fn start_counting(&mut self) -> Result<()> {
        if let Some(audit) = &mut self.audit {
            audit.offset = std::fs::metadata(&audit.path)
                .with_context(|| format!("reading the audit log {}", audit.path.display()))?
                .len();
        }
        Ok(())
    }

    /// istiod's requests since `start_counting`, per verb and resource, from the audit log;
    /// `None` without one.
    pub fn requests(&self) -> Result<Option<BTreeMap<(String, String), u64>>> {
        let Some(audit) = &self.audit else {
            return Ok(None);
        };
        let mut file = std::fs::File::open(&audit.path)
            .with_context(|| format!("opening the audit log {}", audit.path.display()))?;
        file.seek(SeekFrom::Start(audit.offset))?;
        let mut counter = AuditCounter::new(&self.user);
        for line in std::io::BufReader::new(file).lines() {
            counter.add(&line?);
        }
        Ok(Some(counter.counts))
    }
}

/// Deletes `name` at once if it exists (a Pod bound to a node would otherwise wait for a
/// kubelet).
async fn delete_named<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {name}")),
    }
}

/// Counts one user's requests in audit events (JSON lines), each request once.
struct AuditCounter<'a> {
    user: &'a str,
    seen: HashSet<String>,
    counts: BTreeMap<(String, String), u64>,
}

impl<'a> AuditCounter<'a> {
    fn new(user: &'a str) -> Self {
        AuditCounter {
            user,
            seen: HashSet::new(),
            counts: BTreeMap::new(),
        }
    }

    /// One audit event. A watch is logged when its response starts and when it ends: the
    /// audit ID makes it one request. A list or watch of a kind the server does not serve
    /// counts as `404`, as in the fake; a request turned away with 429 (a CRD's storage
    /// still initialising, flow control) counts as `429`.
    fn add(&mut self, line: &str) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if event["user"]["username"] != self.user {
            return;
        }
        let Some(id) = event["auditID"].as_str() else {
            return;
        };
        if !self.seen.insert(id.to_owned()) {
            return;
        }
        let verb = event["verb"].as_str().unwrap_or("?");
        let reference = &event["objectRef"];
        // A request for no resource (discovery, `/version`) is named by its path.
        let path = event["requestURI"].as_str().unwrap_or("?");
        let mut resource = reference["resource"]
            .as_str()
            .unwrap_or_else(|| path.split('?').next().unwrap_or(path))
            .to_owned();
        if let Some(sub) = reference["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let not_served = event["responseStatus"]["code"] == 404
            && matches!(verb, "list" | "watch")
            && reference["name"].is_null();
        let verb = if not_served {
            "404"
        } else if event["responseStatus"]["code"] == 429 {
            "429"
        } else {
            verb
        };
        *self.counts.entry((verb.to_owned(), resource)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_counts_each_request_once_per_user() {
        let user = "system:serviceaccount:istio-system:istiod";
        let lines = [
            // A watch: started, then completed.
            json!({"auditID": "a", "stage": "ResponseStarted", "verb": "watch",
                   "user": {"username": user}, "objectRef": {"resource": "services"},
                   "responseStatus": {"code": 200}}),
            json!({"auditID": "a", "stage": "ResponseComplete", "verb": "watch",
                   "user": {"username": user}, "objectRef": {"resource": "services"},
                   "responseStatus": {"code": 200}}),
            json!({"auditID": "b", "stage": "ResponseComplete", "verb": "get",
                   "user": {"username": user},
                   "objectRef": {"resource": "secrets", "name": "istio-ca-secret"},
                   "responseStatus": {"code": 404}}),
            json!({"auditID": "c", "stage": "ResponseComplete", "verb": "list",
                   "user": {"username": user}, "objectRef": {"resource": "tcproutes"},
                   "responseStatus": {"code": 404}}),
            json!({"auditID": "g", "stage": "ResponseStarted", "verb": "watch",
                   "user": {"username": user}, "objectRef": {"resource": "envoyfilters"},
                   "responseStatus": {"code": 429}}),
            json!({"auditID": "g", "stage": "ResponseComplete", "verb": "watch",
                   "user": {"username": user}, "objectRef": {"resource": "envoyfilters"},
                   "responseStatus": {"code": 429}}),
            json!({"auditID": "d", "stage": "ResponseComplete", "verb": "create",
                   "user": {"username": user},
                   "objectRef": {"resource": "serviceaccounts", "name": "x", "subresource": "token"},
                   "responseStatus": {"code": 201}}),
            json!({"auditID": "f", "stage": "ResponseComplete", "verb": "get",
                   "user": {"username": user}, "requestURI": "/apis/networking.istio.io/v1?timeout=32s",
                   "responseStatus": {"code": 200}}),
            json!({"auditID": "e", "stage": "ResponseComplete", "verb": "list",
                   "user": {"username": "someone-else"}, "objectRef": {"resource": "pods"},
                   "responseStatus": {"code": 200}}),
        ];
        let mut counter = AuditCounter::new(user);
        for line in &lines {
            counter.add(&line.to_string());
        }
        counter.add("not json");
        let key = |v: &str, r: &str| (v.to_owned(), r.to_owned());
        assert_eq!(
            counter.counts,
            BTreeMap::from([
                (key("watch", "services"), 1),
                (key("get", "secrets"), 1),
                (key("404", "tcproutes"), 1),
                (key("429", "envoyfilters"), 1),
                (key("create", "serviceaccounts/token"), 1),
                (key("get", "/apis/networking.istio.io/v1"), 1),
            ])
        );
    }
}
