//! Resource generation: a pure function of (push context, proxy, subscription) → resources.
//!
//! Generators read only the model and each other's helpers; nothing here knows about
//! streams, caches or the wire. The server (`xds::stream`, `xds::cache`) calls [`generate`].

pub mod cds;
pub mod eds;
pub mod filters;
pub mod gateway;
pub mod lds;
pub mod naming;
pub mod proxyless;
pub mod rds;
pub mod route;
pub mod sds;
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

/// The two parts of a proxy's config of one type, generated and cached apart.
///
/// In a mesh every sidecar is a workload with config of its own (the inbound listener,
/// the clusters of the ports it serves), while everything outbound is the same for every
/// proxy with the same view of the mesh (namespace, `Sidecar`, DNS domain). Keeping the
/// two apart lets 500 distinct sidecars share one outbound generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Outbound config: shared by every proxy with the same outbound key.
    Shared,
    /// The proxy's own (inbound) config.
    Own,
}

impl Part {
    /// The parts a proxy's resources of `type_url` are made of. Endpoints and route
    /// configs are all outbound; proxyless clients are served as one part.
    pub fn of(type_url: &str, proxy: &Proxy) -> &'static [Part] {
        if proxy.is_proxyless_grpc() {
            return &[Part::Shared];
        }
        if proxy.is_router() {
            return gateway::parts(type_url);
        }
        match type_url {
            types::CLUSTER | types::LISTENER => &[Part::Shared, Part::Own],
            _ => &[Part::Shared],
        }
    }
}

/// Generates one part of the resources of `type_url` for the proxy. `None` if no
/// generator serves the type. Resources not named by a non-wildcard subscription are left
/// out.
pub fn generate_part(
    type_url: &str,
    part: Part,
    ctx: &GenContext<'_>,
    sub: &Subscription,
) -> Option<Vec<Resource>> {
    let mut out = if ctx.proxy.is_router() {
        gateway::generate_part(type_url, part, ctx, sub)?
    } else if ctx.proxy.is_proxyless_grpc() {
        match (type_url, part) {
            (_, Part::Own) => Vec::new(),
            (types::LISTENER, _) => proxyless::listeners(ctx, sub),
            (types::ROUTE, _) => proxyless::routes(ctx, sub),
            (types::CLUSTER, _) => proxyless::clusters(ctx, sub),
            (types::ENDPOINT, _) => eds::load_assignments(ctx, sub),
            _ => return None,
        }
    } else {
        match (type_url, part) {
            (types::CLUSTER, Part::Shared) => cds::outbound(ctx),
            (types::CLUSTER, Part::Own) => cds::inbound(ctx),
            (types::LISTENER, Part::Shared) => lds::outbound(ctx),
            (types::LISTENER, Part::Own) => lds::inbound(ctx),
            (types::ENDPOINT, Part::Shared) => eds::load_assignments(ctx, sub),
            (types::ROUTE, Part::Shared) => rds::route_configs(ctx, sub),
            (types::ENDPOINT | types::ROUTE, Part::Own) => Vec::new(),
            _ => return None,
        }
    };
    if !matches!(sub, Subscription::Wildcard) {
        out.retain(|r| sub.contains(&r.name));
    }
    Some(out)
}

/// Generates every resource of `type_url` for the proxy: its parts in order. `None` if no
/// generator serves the type.
pub fn generate(type_url: &str, ctx: &GenContext<'_>, sub: &Subscription) -> Option<Vec<Resource>> {
    let mut out = Vec::new();
    for part in Part::of(type_url, ctx.proxy) {
        out.extend(generate_part(type_url, *part, ctx, sub)?);
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
