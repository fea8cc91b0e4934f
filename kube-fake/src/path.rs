//! Resource types and where a request path points.

use std::sync::Arc;

/// A resource type the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

/// The subresources the fake serves, and the part of the object each one writes.
pub(crate) const SUBRESOURCES: [(&str, &[&str]); 2] = [
    ("status", &["status"]),
    ("ephemeralcontainers", &["spec", "ephemeralContainers"]),
];

impl ResourceType {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        }
    }

    /// The type of `kind` in `api_version` when no type is registered: the plural as the
    /// API server derives a CRD's by default (lower case, `-es` after s/x/ch/sh, `-ies`
    /// after a consonant and y).
    pub(crate) fn guess(api_version: &str, kind: &str, namespaced: bool) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let lower = kind.to_ascii_lowercase();
        let plural = if ["s", "x", "ch", "sh"].iter().any(|e| lower.ends_with(e)) {
            format!("{lower}es")
        } else if let Some(stem) = lower
            .strip_suffix('y')
            .filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u']))
        {
            format!("{stem}ies")
        } else {
            format!("{lower}s")
        };
        ResourceType::new(group, version, kind, &plural, namespaced)
    }

    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `/api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`.
    pub(crate) fn collection(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.plural)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.plural)
        }
    }

    /// The path of the collection in `namespace` (all namespaces or cluster-scoped: none).
    pub(crate) fn collection_in(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => {
                let all = self.collection();
                let (prefix, plural) = all.rsplit_once('/').unwrap_or(("", &all));
                format!("{prefix}/namespaces/{ns}/{plural}")
            }
            None => self.collection(),
        }
    }
}

/// A request path taken apart: `/api/v1/namespaces/ns/pods/name/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The collection's path across namespaces: `/api/v1/pods`.
    pub collection: Arc<str>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// The last segment of the collection: `pods`.
    pub fn plural(&self) -> &str {
        self.collection.rsplit('/').next().unwrap_or("")
    }

    /// The parts of the object the subresource writes, if it is one the fake serves.
    pub fn subresource_fields(&self) -> Option<&'static [&'static str]> {
        let sub = self.subresource.as_deref()?;
        SUBRESOURCES
            .iter()
            .find(|(name, _)| *name == sub)
            .map(|(_, fields)| *fields)
    }
}

/// Takes a path apart, or `None` if it is not a resource path.
pub(crate) fn parse(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    if plural.is_empty() || name.is_some_and(str::is_empty) {
        return None;
    }
    Some(Target {
        collection: Arc::from(format!("{prefix}/{plural}")),
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_collection_namespace_object_and_subresource() {
        let t = parse("/api/v1/namespaces/mesh/pods/istiod-0/ephemeralcontainers").unwrap();
        assert_eq!(&*t.collection, "/api/v1/pods");
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref()),
            (Some("mesh"), Some("istiod-0"))
        );
        assert_eq!(
            t.subresource_fields(),
            Some(&["spec", "ephemeralContainers"][..])
        );
        // A namespace is itself an object of the `namespaces` collection.
        let t = parse("/api/v1/namespaces/demo").unwrap();
        assert_eq!(
            (&*t.collection, t.namespace, t.name.as_deref()),
            ("/api/v1/namespaces", None, Some("demo"))
        );
        let t = parse("/apis/networking.istio.io/v1/virtualservices").unwrap();
        assert_eq!(t.plural(), "virtualservices");
        assert!(parse("/version").is_none());
        assert!(parse("/api/v1/namespaces/a/pods/b/c/d").is_none());
    }

    #[test]
    fn guessed_plurals_follow_the_api_servers_default() {
        let cases = [
            ("v1", "Service", "", "services"),
            (
                "networking.istio.io/v1",
                "ServiceEntry",
                "networking.istio.io",
                "serviceentries",
            ),
            (
                "gateway.networking.k8s.io/v1",
                "GatewayClass",
                "gateway.networking.k8s.io",
                "gatewayclasses",
            ),
            (
                "coordination.k8s.io/v1",
                "Lease",
                "coordination.k8s.io",
                "leases",
            ),
            (
                "security.istio.io/v1",
                "AuthorizationPolicy",
                "security.istio.io",
                "authorizationpolicies",
            ),
            ("v1", "Gateway", "", "gateways"),
        ];
        for (api_version, kind, group, plural) in cases {
            let t = ResourceType::guess(api_version, kind, true);
            assert_eq!(
                (t.group.as_str(), t.plural.as_str()),
                (group, plural),
                "{kind}"
            );
        }
        let t = ResourceType::guess("v1", "ConfigMap", true);
        assert_eq!(
            t.collection_in(Some("istio-system")),
            "/api/v1/namespaces/istio-system/configmaps"
        );
    }
}
