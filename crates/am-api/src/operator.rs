//! Operator requests as the API takes them: which path and query make which
//! [`OperatorRequest`], and the Alertmanager webhook's alerts as predicted host failures.

use am_core::{HostId, OperatorRequest};
use serde::Deserialize;

/// The largest Alertmanager notification read (a group of alerts); larger ones are refused.
pub const MAX_ALERTMANAGER_BODY: usize = 1 << 20;

/// The labels an alert names its host by, tried in this order (`instance` loses its `:port`).
pub const HOST_LABELS: [&str; 4] = ["host", "hostname", "node", "instance"];

/// Why a request was refused: an HTTP status and the text.
pub(crate) type Refusal = (u16, String);

/// A host request: `hosts/{id}/evacuate`, `hosts/{id}/maintenance/enter|exit`,
/// `hosts/{id}/degraded[/clear]`, with the query's options.
pub(crate) fn host_request(
    host: String,
    what: &[&str],
    param: impl Fn(&str) -> Option<String>,
) -> Result<OperatorRequest, Refusal> {
    let host = HostId::from(host.as_str());
    let flag = |name: &str| matches!(param(name).as_deref(), Some("" | "true" | "1"));
    let text = |name: &str, default: &str| {
        param(name)
            .filter(|r| !r.is_empty())
            .map_or_else(|| default.to_owned(), |r| r.chars().take(200).collect())
    };
    Ok(match what {
        ["evacuate"] => OperatorRequest::Evacuate {
            host,
            reason: text("reason", "maintenance"),
            enter_maintenance: flag("enter_maintenance"),
        },
        ["maintenance", "enter"] => OperatorRequest::MaintenanceEnter { host },
        ["maintenance", "exit"] => OperatorRequest::MaintenanceExit {
            host,
            return_vms: flag("return_vms"),
        },
        ["degraded"] => OperatorRequest::Degraded {
            host,
            reason: text("reason", "predicted failure"),
            source: "api".into(),
        },
        ["degraded", "clear"] => OperatorRequest::DegradedClear {
            host,
            source: "api".into(),
        },
        other => {
            return Err((
                404,
                format!(
                    "no such host request `{}` (evacuate, maintenance/enter, maintenance/exit, degraded, degraded/clear)",
                    other.join("/")
                ),
            ));
        }
    })
}

#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
struct Alert {
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The requests an Alertmanager webhook notification makes: each firing alert marks its host
/// degraded, each resolved one clears it. Alerts naming no host (no label of [`HOST_LABELS`])
/// are skipped and counted.
pub(crate) fn alertmanager(body: &[u8]) -> Result<(Vec<OperatorRequest>, usize), Refusal> {
    let n: Notification = serde_json::from_slice(body).map_err(|e| {
        (
            400,
            format!("not an Alertmanager webhook notification (JSON with `alerts`): {e}"),
        )
    })?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for a in n.alerts {
        let Some(host) = HOST_LABELS.iter().find_map(|l| a.labels.get(*l)) else {
            skipped += 1;
            continue;
        };
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host.as_str(),
        };
        let host = HostId::from(host);
        let name = a.labels.get("alertname").map_or("alert", String::as_str);
        let summary = ["summary", "description"]
            .iter()
            .find_map(|k| a.annotations.get(*k));
        let reason: String = match summary {
            Some(s) => format!("{name}: {s}"),
            None => name.to_owned(),
        }
        .chars()
        .take(200)
        .collect();
        out.push(if a.status == "resolved" {
            OperatorRequest::DegradedClear {
                host,
                source: "alertmanager".into(),
            }
        } else {
            OperatorRequest::Degraded {
                host,
                reason,
                source: "alertmanager".into(),
            }
        });
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_alerts_mark_hosts_degraded_and_resolved_ones_clear_them() {
        let body = br#"{"version":"4","status":"firing","receiver":"am","alerts":[
            {"status":"firing","labels":{"alertname":"DimmErrors","instance":"esx-3:9100"},
             "annotations":{"summary":"correctable ECC errors rising"}},
            {"status":"resolved","labels":{"alertname":"FanFailed","host":"esx-1"}},
            {"status":"firing","labels":{"alertname":"Other"}}]}"#;
        let (reqs, skipped) = alertmanager(body).unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(
            reqs,
            vec![
                OperatorRequest::Degraded {
                    host: "esx-3".into(),
                    reason: "DimmErrors: correctable ECC errors rising".into(),
                    source: "alertmanager".into(),
                },
                OperatorRequest::DegradedClear {
                    host: "esx-1".into(),
                    source: "alertmanager".into(),
                },
            ]
        );
        let (code, why) = alertmanager(b"[1,2]").unwrap_err();
        assert_eq!(code, 400);
        assert!(why.contains("Alertmanager"), "{why}");
    }

    #[test]
    fn host_requests_take_their_options_from_the_query() {
        let q = |name: &str| match name {
            "return_vms" => Some("true".to_owned()),
            "reason" => Some("PSU".to_owned()),
            _ => None,
        };
        assert_eq!(
            host_request("h1".into(), &["maintenance", "exit"], q).unwrap(),
            OperatorRequest::MaintenanceExit {
                host: "h1".into(),
                return_vms: true
            }
        );
        assert!(matches!(
            host_request("h1".into(), &["degraded"], q).unwrap(),
            OperatorRequest::Degraded { reason, .. } if reason == "PSU"
        ));
        assert_eq!(host_request("h1".into(), &["reboot"], q).unwrap_err().0, 404);
    }
}
