//! How a `pilot-discovery` under test is started against a Kubernetes API server: ours, or
//! upstream's Go istiod with the flags and environment it needs besides.

use crate::process::Ports;

use super::objects;

/// The arguments and environment of `discovery --kubeconfig FILE` on `ports` as pod
/// `pod_name` of istiod's namespace; `upstream` for upstream's Go istiod.
pub fn discovery_command(
    ports: &Ports,
    kubeconfig: &str,
    pod_name: &'static str,
    upstream: bool,
) -> (Vec<String>, Vec<(&'static str, &'static str)>) {
    let mut args = ports.discovery_args(&["--kubeconfig", kubeconfig]);
    // No admission limit for new streams. Upstream's limiter gives a stream one second,
    // which a CPU-starved process can miss (`ResourceExhausted`); 0 turns it off there.
    let max_streams_per_second = if upstream { "0" } else { "10000" };
    let mut env = vec![
        ("POD_NAMESPACE", objects::ISTIO_NAMESPACE),
        ("POD_NAME", pod_name),
        ("PILOT_MAX_REQUESTS_PER_SECOND", max_streams_per_second),
    ];
    if upstream {
        // What the Go istiod needs besides: no mesh or networks file (the `istio`
        // ConfigMap holds the mesh config), no federation, ControlZ on a free port.
        args.extend(
            [
                "--meshConfig",
                "/nonexistent",
                "--networksConfig",
                "/nonexistent",
                "--federationAddr=",
                "--ctrlz_address",
                "127.0.0.1",
                "--ctrlz_port",
                "0",
            ]
            .map(str::to_owned),
        );
        env.push(("PILOT_ENABLE_FEDERATION", "false"));
    } else {
        args.extend(
            [
                "--registries",
                "Kubernetes",
                "--log_output_level",
                "default:info",
            ]
            .map(str::to_owned),
        );
    }
    (args, env)
}
