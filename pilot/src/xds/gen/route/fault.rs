//! VirtualService fault injection → Envoy `HTTPFault`, set per route for the
//! `envoy.filters.http.fault` filter.

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    fault_delay::FaultDelaySecifier, FaultDelay,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, FaultAbort, HttpFault,
};

use super::{duration, fraction};
use crate::config::istio::{parse_duration, HttpFaultInjection, GRPC_STATUS_NAMES};

/// Translates a rule's fault injection. `None` when nothing usable is left: exponential
/// delays are not supported by Envoy, and an abort needs an HTTP or gRPC status.
pub fn http_fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay.as_deref().and_then(parse_duration)?;
        let percentage = match (&d.percentage, d.percent) {
            (Some(p), _) => Some(fraction(p.value)),
            (None, Some(p)) => Some(fraction(f64::from(p))),
            (None, None) => None,
        };
        Some(FaultDelay {
            percentage,
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(fixed))),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = match (a.http_status, a.grpc_status.as_deref()) {
            (Some(status), _) => ErrorType::HttpStatus(status),
            (None, Some(code)) => ErrorType::GrpcStatus(grpc_code(code)?),
            (None, None) => return None,
        };
        Some(FaultAbort {
            percentage: a.percentage.as_ref().map(|p| fraction(p.value)),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    (delay.is_some() || abort.is_some()).then(|| HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

/// The numeric code of a gRPC status name (`UNAVAILABLE` → 14).
pub fn grpc_code(name: &str) -> Option<u32> {
    let code = GRPC_STATUS_NAMES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))?;
    u32::try_from(code).ok()
}
