//! VirtualService HTTP routes → Envoy routes, shared by sidecar RDS and proxyless gRPC.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
    RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action,
    route::Action,
    route_action::{self, ClusterSpecifier, HostRewriteSpecifier},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};

use super::filters::{any, FAULT_FILTER};
use super::naming::{cluster_name, Direction};
use crate::config::istio::{
    parse_duration, Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute,
    HttpRouteDestination, Labels, StringMatch,
};
use crate::model::service::labels_match;
use crate::model::PushContext;

/// Upstream's default retry policy for sidecars: two retries on connection-level failures.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Who the routes are built for: the gateway names the proxy stands for (`mesh` for a
/// sidecar, `namespace/name` of each Gateway of a router's server) and the proxy's labels
/// and namespace, which matches may select on.
#[derive(Debug, Clone, Copy)]
pub struct RouteSource<'a> {
    pub gateways: &'a [&'a str],
    pub labels: &'a Labels,
    pub namespace: &'a str,
}

impl RouteSource<'_> {
    /// Upstream's `sourceMatchHTTP`: a match naming gateways applies to those; otherwise
    /// its `sourceLabels` and `sourceNamespace` must fit the proxy.
    pub fn matches(&self, m: &HttpMatchRequest) -> bool {
        if !m.gateways.is_empty() {
            return m
                .gateways
                .iter()
                .any(|g| self.gateways.contains(&g.as_str()));
        }
        labels_match(&m.source_labels, self.labels)
            && m.source_namespace
                .as_deref()
                .is_none_or(|ns| ns.is_empty() || ns == self.namespace)
    }
}

/// Builds the Envoy routes for the HTTP rules of a virtual service, for traffic on `port`
/// from `source`. Rules whose matches all name another port or another source are skipped.
pub fn http_routes(
    push: &PushContext,
    rules: &[HttpRoute],
    port: u16,
    proxyless: bool,
    source: &RouteSource<'_>,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let matches: Vec<&HttpMatchRequest> = rule
            .matches
            .iter()
            .filter(|m| m.port.is_none_or(|p| p == u32::from(port)) && source.matches(m))
            .collect();
        if !rule.matches.is_empty() && matches.is_empty() {
            continue;
        }
        let route_matches = if matches.is_empty() {
            vec![RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }]
        } else {
            matches.iter().map(|m| route_match(m)).collect()
        };
        let name = if rule.name.is_empty() {
            format!("route-{i}")
        } else {
            rule.name.clone()
        };
        // A rule with nothing to send traffic to would make Envoy reject the whole route
        // config; validation rejects it upstream, so it is left out here.
        let Some((action, dest_headers)) = action(push, rule, port, proxyless) else {
            continue;
        };
        let typed_per_filter_config: HashMap<String, Any> = rule
            .fault
            .as_ref()
            .and_then(fault::http_fault)
            .map(|f| (FAULT_FILTER.to_owned(), any(&f)))
            .into_iter()
            .collect();
        for m in route_matches {
            let mut request_headers_to_add =
                header_adds(rule.headers.as_ref().and_then(|h| h.request.as_ref()));
            let mut response_headers_to_add =
                header_adds(rule.headers.as_ref().and_then(|h| h.response.as_ref()));
            if let Some(h) = dest_headers {
                request_headers_to_add.extend(header_adds(h.request.as_ref()));
                response_headers_to_add.extend(header_adds(h.response.as_ref()));
            }
            out.push(Route {
                name: name.clone(),
                r#match: Some(m),
                action: Some(action.clone()),
                typed_per_filter_config: typed_per_filter_config.clone(),
                request_headers_to_add,
                request_headers_to_remove: rule
                    .headers
                    .as_ref()
                    .and_then(|h| h.request.as_ref())
                    .map(|o| o.remove.clone())
                    .unwrap_or_default(),
                response_headers_to_add,
                response_headers_to_remove: rule
                    .headers
                    .as_ref()
                    .and_then(|h| h.response.as_ref())
                    .map(|o| o.remove.clone())
                    .unwrap_or_default(),
                ..Default::default()
            });
        }
    }
    out
}

/// The route for a service without a virtual service: everything to its cluster.
pub fn default_route(cluster: String, proxyless: bool) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
            timeout: Some(duration(StdDuration::ZERO)),
            retry_policy: (!proxyless).then(default_retry_policy),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(UInt32Value { value: 2 }),
        retriable_status_codes: vec![503],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path_specifier = match &m.uri {
        Some(StringMatch::Exact(p)) => PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => PathSpecifier::SafeRegex(regex(r)),
        None => PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(name, sm, false));
        }
    }
    headers.extend(m.headers.iter().map(|(k, v)| header_matcher(k, v, false)));
    headers.extend(
        m.without_headers
            .iter()
            .map(|(k, v)| header_matcher(k, v, true)),
    );
    RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: m
            .ignore_uri_case
            .then_some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|(k, v)| QueryParameterMatcher {
                name: k.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(v),
                )),
            })
            .collect(),
        ..Default::default()
    }
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        invert_match: invert,
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(m))),
        ..Default::default()
    }
}

fn string_matcher(m: &StringMatch) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match m {
            StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
            StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
            StringMatch::Regex(r) => MatchPattern::SafeRegex(regex(r)),
        }),
        ..Default::default()
    }
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_owned(),
        ..Default::default()
    }
}

/// The action of a rule, with the header operations of its destination when traffic goes
/// to a single one (upstream moves them onto the route). `None` when no destination is
/// left after dropping zero weights.
fn action<'a>(
    push: &PushContext,
    rule: &'a HttpRoute,
    port: u16,
    proxyless: bool,
) -> Option<(Action, Option<&'a Headers>)> {
    if let Some(dr) = &rule.direct_response {
        return Some((Action::DirectResponse(DirectResponseAction {
            status: dr.status,
            body: dr.body.as_ref().and_then(|b| b.string.clone()).map(|s| DataSource {
                specifier: Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(s)),
                ..Default::default()
            }),
            ..Default::default()
        }), None));
    }
    if let Some(r) = &rule.redirect {
        return Some((
            Action::Redirect(RedirectAction {
                host_redirect: r.authority.clone(),
                port_redirect: r.port.unwrap_or_default(),
                path_rewrite_specifier: (!r.uri.is_empty())
                    .then(|| redirect_action::PathRewriteSpecifier::PathRedirect(r.uri.clone())),
                scheme_rewrite_specifier: (!r.scheme.is_empty()).then(|| {
                    redirect_action::SchemeRewriteSpecifier::SchemeRedirect(r.scheme.clone())
                }),
                response_code: redirect_code(r.redirect_code.unwrap_or(301)) as i32,
                ..Default::default()
            }),
            None,
        ));
    }
    // A lone destination takes all traffic whatever its weight; otherwise zero weights
    // are dropped and Envoy splits over the sum of the rest, so weights need not add up
    // to 100.
    let weighted: Vec<&HttpRouteDestination> = if rule.route.len() == 1 {
        rule.route.iter().collect()
    } else {
        rule.route
            .iter()
            .filter(|d| d.weight.unwrap_or(0) > 0)
            .collect()
    };
    let (cluster_specifier, dest_headers) = match weighted.as_slice() {
        [] => return None,
        [only] => (
            ClusterSpecifier::Cluster(destination_cluster(push, &only.destination, port)),
            only.headers.as_ref(),
        ),
        many => (
            ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: many
                    .iter()
                    .map(|d| ClusterWeight {
                        name: destination_cluster(push, &d.destination, port),
                        weight: Some(UInt32Value {
                            value: d.weight.unwrap_or(0),
                        }),
                        request_headers_to_add: header_adds(
                            d.headers.as_ref().and_then(|h| h.request.as_ref()),
                        ),
                        response_headers_to_add: header_adds(
                            d.headers.as_ref().and_then(|h| h.response.as_ref()),
                        ),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            None,
        ),
    };
    let timeout = rule
        .timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(StdDuration::ZERO);
    let retry_policy = match &rule.retries {
        Some(r) if r.attempts == 0 => None,
        Some(r) => Some(RetryPolicy {
            retry_on: r
                .retry_on
                .clone()
                .unwrap_or_else(|| DEFAULT_RETRY_ON.into()),
            num_retries: Some(UInt32Value { value: r.attempts }),
            per_try_timeout: r
                .per_try_timeout
                .as_deref()
                .and_then(parse_duration)
                .map(duration),
            retriable_status_codes: vec![503],
            host_selection_retry_max_attempts: 5,
            ..Default::default()
        }),
        None if proxyless => None,
        None => Some(default_retry_policy()),
    };
    let mut mirrors: Vec<route_action::RequestMirrorPolicy> = rule
        .mirror
        .iter()
        .map(|m| {
            mirror_policy(
                push,
                m,
                rule.mirror_percentage.as_ref().map(|p| p.value),
                port,
            )
        })
        .collect();
    mirrors.extend(rule.mirrors.iter().map(|m| {
        mirror_policy(
            push,
            &m.destination,
            m.percentage.as_ref().map(|p| p.value),
            port,
        )
    }));
    let action = Action::Route(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(duration(timeout)),
        max_stream_duration: (proxyless && !timeout.is_zero()).then(|| {
            route_action::MaxStreamDuration {
                max_stream_duration: Some(duration(timeout)),
                ..Default::default()
            }
        }),
        retry_policy,
        prefix_rewrite: rule
            .rewrite
            .as_ref()
            .map(|r| r.uri.clone())
            .unwrap_or_default(),
        host_rewrite_specifier: rule
            .rewrite
            .as_ref()
            .filter(|r| !r.authority.is_empty())
            .map(|r| HostRewriteSpecifier::HostRewriteLiteral(r.authority.clone())),
        request_mirror_policies: mirrors,
        ..Default::default()
    });
    Some((action, dest_headers))
}

fn mirror_policy(
    push: &PushContext,
    dest: &Destination,
    percent: Option<f64>,
    port: u16,
) -> route_action::RequestMirrorPolicy {
    route_action::RequestMirrorPolicy {
        cluster: destination_cluster(push, dest, port),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(fraction(percent.unwrap_or(100.0))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A percentage as Envoy's fraction per million (keeps fractional percents such as 0.1).
pub fn fraction(percent: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// The cluster a destination names: its port, else the service's only port, else the
/// port the traffic arrived on.
pub fn destination_cluster(push: &PushContext, dest: &Destination, port: u16) -> String {
    let port = dest
        .port
        .as_ref()
        .and_then(|p| u16::try_from(p.number).ok())
        .or_else(|| {
            push.service(&dest.host)
                .filter(|s| s.ports.len() == 1)
                .map(|s| s.ports[0].port)
        })
        .unwrap_or(port);
    cluster_name(Direction::Outbound, port, &dest.subset, &dest.host)
}

fn header_adds(ops: Option<&HeaderOperations>) -> Vec<HeaderValueOption> {
    let Some(ops) = ops else { return Vec::new() };
    let set = ops
        .set
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = ops
        .add
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add)
        .map(|(k, v, action)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        })
        .collect()
}

fn redirect_code(code: u32) -> redirect_action::RedirectResponseCode {
    use redirect_action::RedirectResponseCode as C;
    match code {
        302 => C::Found,
        303 => C::SeeOther,
        307 => C::TemporaryRedirect,
        308 => C::PermanentRedirect,
        _ => C::MovedPermanently,
    }
}

/// A protobuf duration.
pub fn duration(d: StdDuration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub mod fault;

#[cfg(test)]
mod tests;
