//! Resource generation: a pure function of (push context, proxy, subscription) → resources.
//!
//! Generators read only the model and each other's helpers; nothing here knows about
//! streams, caches or the wire. The server (`xds::stream`, `xds::cache`) calls [`generate`].

pub mod cds;
pub mod eds;
pub mod filters;
pub mod lds;
pub mod naming;
pub mod proxyless;
pub mod rds;
pub mod route;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::types;
use crate::model::{Proxy, PushContext, SidecarScope};

/// What a proxy asked for of one type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// Everything of the type (an empty first request for CDS/LDS).
    Wildcard,
    /// Only these names; shared (see `xds::subscriptions::NameSets`), so cloning is cheap.
    Names(Arc<BTreeSet<String>>),
}

impl Subscription {
    /// A subscription to exactly `names`.
    pub fn of<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Subscription::Names(Arc::new(names.into_iter().map(Into::into).collect()))
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(n) => n.contains(name),
        }
    }

    /// The explicitly requested names (empty for a wildcard).
    pub fn names(&self) -> impl Iterator<Item = &String> {
        let names = match self {
            Subscription::Wildcard => None,
            Subscription::Names(n) => Some(n.iter()),
        };
        names.into_iter().flatten()
    }
}

/// One generated resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub body: Any,
}

impl Resource {
    pub fn new<M: Message + Name>(name: impl Into<String>, message: &M) -> Resource {
        Resource {
            name: name.into(),
            body: Any {
                type_url: M::type_url(),
                value: message.encode_to_vec(),
            },
        }
    }
}

/// Everything a generator reads.
pub struct GenContext<'a> {
    pub push: &'a PushContext,
    pub proxy: &'a Proxy,
    pub scope: &'a SidecarScope,
}

/// Generates resources of `type_url` for the proxy. `None` if no generator serves the type.
/// Resources not named by a non-wildcard subscription are left out.
pub fn generate(type_url: &str, ctx: &GenContext<'_>, sub: &Subscription) -> Option<Vec<Resource>> {
    let mut out = if ctx.proxy.is_proxyless_grpc() {
        match type_url {
            types::LISTENER => proxyless::listeners(ctx, sub),
            types::ROUTE => proxyless::routes(ctx, sub),
            types::CLUSTER => proxyless::clusters(ctx, sub),
            types::ENDPOINT => eds::load_assignments(ctx, sub),
            _ => return None,
        }
    } else {
        match type_url {
            types::CLUSTER => cds::clusters(ctx),
            types::ENDPOINT => eds::load_assignments(ctx, sub),
            types::LISTENER => lds::listeners(ctx),
            types::ROUTE => rds::route_configs(ctx, sub),
            _ => return None,
        }
    };
    if !matches!(sub, Subscription::Wildcard) {
        out.retain(|r| sub.contains(&r.name));
    }
    Some(out)
}

/// Generates the whole config of a proxy for `/debug/config_dump`: every type, wildcard
/// for CDS/LDS and the names those imply for EDS/RDS.
pub fn generate_all(ctx: &GenContext<'_>) -> Vec<(String, Vec<Resource>)> {
    let clusters = generate(types::CLUSTER, ctx, &Subscription::Wildcard).unwrap_or_default();
    let listeners = generate(types::LISTENER, ctx, &Subscription::Wildcard).unwrap_or_default();
    let eds_names = Subscription::of(clusters.iter().map(|c| c.name.clone()));
    let rds_names = Subscription::Names(Arc::new(rds::referenced_route_names(&listeners)));
    let endpoints = generate(types::ENDPOINT, ctx, &eds_names).unwrap_or_default();
    let routes = generate(types::ROUTE, ctx, &rds_names).unwrap_or_default();
    vec![
        (types::CLUSTER.to_owned(), clusters),
        (types::ENDPOINT.to_owned(), endpoints),
        (types::LISTENER.to_owned(), listeners),
        (types::ROUTE.to_owned(), routes),
    ]
}
