//! Manager HA (issue 13) on the board: who leads this daemon's unit, with which token, and how
//! much of the lease is left; as JSON (`status`), one line of `stats`, and metrics.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `am_ha_leader` | gauge | 1 when this daemon leads its unit (label `unit`) |
//! | `am_ha_unit_without_leader` | gauge | 1 when this daemon sees nobody leading its unit |
//! | `am_ha_lease_remaining_seconds` | gauge | the leader's lease's remaining time, as last seen |
//! | `am_ha_takeovers_total` | counter | takeovers of the unit (a leader after another), from etcd |
//! | `am_ha_leases_lost_total` | counter | leaders of the unit whose lease ran out, from etcd |
//!
//! The counters are the unit's, kept in etcd by each new leader, so every daemon of the unit
//! reports the same figures. A standby that cannot take a leaderless unit over raises
//! `AlarmKind::UnitWithoutLeader`; "no leader" is also best alerted on across daemons (`sum by (unit)
//! (am_ha_leader) == 0`): when every daemon is down, none is left to raise an alarm.

use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// The leadership of this daemon's unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaView {
    /// The unit of work.
    pub unit: String,
    /// This daemon's name.
    pub name: String,
    /// Whether this daemon leads it.
    pub leading: bool,
    /// Who leads it, if anyone.
    pub leader: Option<String>,
    /// The leader's fencing token.
    pub token: Option<i64>,
    /// The leader's lease's remaining time, in milliseconds, as last seen.
    pub lease_remaining_ms: Option<u64>,
    /// Takeovers of the unit so far.
    pub takeovers: u64,
    /// Leases lost by its leaders so far.
    pub leases_lost: u64,
}

impl HaView {
    /// One line for `stats`.
    pub fn line(&self) -> String {
        let role = if self.leading { "leader" } else { "standby" };
        let leader = match (&self.leader, self.token) {
            (Some(l), Some(t)) => format!("leader {l} (token {t})"),
            _ => "no leader".into(),
        };
        let lease = self.lease_remaining_ms.map_or_else(String::new, |ms| {
            format!(", lease {:.1}s left", ms as f64 / 1000.0)
        });
        format!(
            "HA: unit {} — {} is {role}; {leader}{lease}; {} takeovers, {} leases lost",
            self.unit, self.name, self.takeovers, self.leases_lost
        )
    }
}

/// Registers the HA metrics of `ha` (nothing without HA).
pub(crate) fn register(reg: &mut Registry, ha: Option<&HaView>) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use std::sync::atomic::AtomicU64;
    let Some(ha) = ha else { return };
    let labels = vec![("unit", ha.unit.clone())];
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let f: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
        f.get_or_create(&labels).set(v);
        reg.register(name, help, f);
    };
    gauge(
        reg,
        "am_ha_leader",
        "1 when this daemon leads its unit",
        i64::from(ha.leading),
    );
    gauge(
        reg,
        "am_ha_unit_without_leader",
        "1 when this daemon sees nobody leading its unit",
        i64::from(ha.leader.is_none()),
    );
    if let Some(ms) = ha.lease_remaining_ms {
        let f: Family<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>> = Family::default();
        f.get_or_create(&labels).set(ms as f64 / 1000.0);
        reg.register(
            "am_ha_lease_remaining_seconds",
            "The leader's lease's remaining time, as last seen",
            f,
        );
    }
    for (name, help, v) in [
        (
            "am_ha_takeovers",
            "Takeovers of the unit by a new leader",
            ha.takeovers,
        ),
        (
            "am_ha_leases_lost",
            "Leaders of the unit whose lease ran out",
            ha.leases_lost,
        ),
    ] {
        let f: Family<Vec<(&'static str, String)>, Counter> = Family::default();
        f.get_or_create(&labels).inc_by(v);
        reg.register(name, help, f);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_metrics_and_the_line_say_who_leads() {
        let ha = HaView {
            unit: "vc1".into(),
            name: "am-b".into(),
            leading: false,
            leader: Some("am-a".into()),
            token: Some(42),
            lease_remaining_ms: Some(4_200),
            takeovers: 3,
            leases_lost: 2,
        };
        let mut snap = crate::Snapshot {
            ha: Some(ha.clone()),
            ..crate::Snapshot::default()
        };
        let text = crate::render_prometheus(&snap);
        for want in [
            "am_ha_leader{unit=\"vc1\"} 0",
            "am_ha_unit_without_leader{unit=\"vc1\"} 0",
            "am_ha_lease_remaining_seconds{unit=\"vc1\"} 4.2",
            "am_ha_takeovers_total{unit=\"vc1\"} 3",
            "am_ha_leases_lost_total{unit=\"vc1\"} 2",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        let line = ha.line();
        assert!(
            line.contains("am-b is standby") && line.contains("leader am-a (token 42)"),
            "{line}"
        );
        let nobody = HaView {
            leader: None,
            token: None,
            ..ha
        };
        snap.ha = Some(nobody.clone());
        assert!(crate::render_prometheus(&snap).contains("am_ha_unit_without_leader{unit=\"vc1\"} 1"));
        assert!(nobody.line().contains("no leader"));
        snap.ha = None;
        assert!(
            !crate::render_prometheus(&snap).contains("am_ha_"),
            "nothing without HA"
        );
    }
}
