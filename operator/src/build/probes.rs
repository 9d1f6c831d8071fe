//! Health probes on the store's metrics listener.
//!
//! - startup: `/health?serializable=true` answers from the member's local state, so a member
//!   waiting for its peers during bootstrap is not killed; it gets five minutes.
//! - liveness: `/livez` fails only when the process is wedged, never because of quorum loss
//!   (restarting every member when quorum is lost would make things worse).
//! - readiness: `/readyz` requires a leader, so the client Service only routes to members that
//!   can serve linearizable requests.

use k8s_openapi::api::core::v1::{HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::METRICS_PORT;

fn http_probe(path: &str, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(METRICS_PORT),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Default::default()
    }
}

pub fn startup() -> Probe {
    http_probe("/health?serializable=true", 5, 60, 5)
}

pub fn liveness() -> Probe {
    http_probe("/livez", 10, 6, 5)
}

pub fn readiness() -> Probe {
    http_probe("/readyz", 5, 3, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &Probe) -> (&str, &IntOrString) {
        let g = p.http_get.as_ref().unwrap();
        (g.path.as_deref().unwrap(), &g.port)
    }

    #[test]
    fn probes_hit_the_metrics_port_endpoints() {
        assert_eq!(
            path(&startup()),
            ("/health?serializable=true", &IntOrString::Int(2381))
        );
        assert_eq!(path(&liveness()), ("/livez", &IntOrString::Int(2381)));
        assert_eq!(path(&readiness()), ("/readyz", &IntOrString::Int(2381)));
    }

    #[test]
    fn startup_allows_a_slow_bootstrap_before_liveness_applies() {
        let s = startup();
        let budget = s.period_seconds.unwrap() * s.failure_threshold.unwrap();
        assert!(budget >= 300, "bootstrap budget {budget}s");
        let l = liveness();
        assert!(l.period_seconds.unwrap() * l.failure_threshold.unwrap() >= 60);
    }
}
