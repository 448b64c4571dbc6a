//! `GET /metrics`: the snapshot as Prometheus metrics.
//!
//! The metrics are derived from a [`Snapshot`] at scrape time: a fresh `prometheus-client`
//! registry is filled and encoded on every scrape, so the figures are exactly the snapshot's (no
//! second copy of the state to keep in step).
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `am_hosts` | gauge | `state` | hosts per supervisor state |
//! | `am_vms` | gauge | `state` | VMs per [`crate::VmClass`] |
//! | `am_protected_vms` | gauge | | VMs the manager keeps running |
//! | `am_alarms` | gauge | `kind` | active alarms per kind |
//! | `am_alarms_by_severity` | gauge | `severity` | active alarms per severity |
//! | `am_alarms_acknowledged` | gauge | | active alarms acknowledged |
//! | `am_actions_in_flight` | gauge | | actions issued, no outcome yet |
//! | `am_executor_running`, `am_executor_queued` | gauge | | the executor's load |
//! | `am_executor_actions_{started,succeeded,failed,timed_out}_total` | counter | `op` | per operation |
//! | `am_executor_action_seconds_total` | counter | `op` | run time of finished actions |
//! | `am_executor_action_max_seconds` | gauge | `op` | longest run |
//! | `am_incidents_total` | counter | | incidents (hosts and VMs) |
//! | `am_incidents_open` | gauge | | incidents not ended |
//! | `am_recoveries_total` | counter | | VM incidents ended by the VM answering again |
//! | `am_mttr_seconds` | gauge | | mean time to recovery (absent before the first) |
//! | `am_availability_ratio` | gauge | | estimated availability of protected VMs |
//! | `am_host_failures_tolerated` | gauge | | admission control (absent when not computed) |
//! | `am_host_failures_to_tolerate` | gauge | | the policy's target |
//! | `am_manager_isolated`, `am_storm_guard`, `am_disarmed` | gauge | | 1 when set |
//! | `am_evacuation_moves_pending` | gauge | | moves of evacuations not finished |
//! | `am_snapshot_age_seconds` | gauge | | time since the last supervisor step that changed something |
//! | `am_ha_*` | | `unit` | manager HA, with `[etcd]` (see `ha.rs`): leader, takeovers, leases lost |
//!
//! Two formats: the Prometheus text format 0.0.4 (the default, what `curl` gets) and OpenMetrics
//! 1.0 (when the scraper's `Accept` asks for `application/openmetrics-text`, as Prometheus does).

use crate::snapshot::{ALARM_KINDS, HOST_STATES, Snapshot, VmClass, alarm_kind_name};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Content type of [`render_prometheus`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn gauge_i(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    reg.register(name, help, g);
}

fn gauge_f(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter_u(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn registry(s: &Snapshot) -> Registry {
    let mut reg = Registry::default();
    let c = &s.cluster;

    let hosts = Family::<Labels, Gauge>::default();
    for state in HOST_STATES {
        hosts.get_or_create(&vec![("state", state.to_owned())]).set(0);
    }
    for (state, n) in &c.hosts_by_state {
        hosts
            .get_or_create(&vec![("state", state.clone())])
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    reg.register("am_hosts", "Hosts per supervisor state", hosts);

    let vms = Family::<Labels, Gauge>::default();
    for class in VmClass::ALL {
        vms.get_or_create(&vec![("state", class.name().to_owned())])
            .set(0);
    }
    for (state, n) in &c.vms_by_state {
        vms.get_or_create(&vec![("state", state.clone())])
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    reg.register("am_vms", "VMs per health state", vms);
    gauge_i(
        &mut reg,
        "am_protected_vms",
        "VMs the manager keeps running",
        c.protected_vms as u64,
    );

    let alarms = Family::<Labels, Gauge>::default();
    for kind in ALARM_KINDS {
        alarms
            .get_or_create(&vec![("kind", alarm_kind_name(kind))])
            .set(0);
    }
    let severities = Family::<Labels, Gauge>::default();
    for sev in ["info", "warning", "critical"] {
        severities
            .get_or_create(&vec![("severity", sev.to_owned())])
            .set(0);
    }
    for a in &s.alarms {
        alarms
            .get_or_create(&vec![("kind", alarm_kind_name(a.kind))])
            .inc();
        let sev = match serde_json::to_value(a.severity) {
            Ok(serde_json::Value::String(v)) => v,
            _ => format!("{:?}", a.severity),
        };
        severities.get_or_create(&vec![("severity", sev)]).inc();
    }
    reg.register("am_alarms", "Active alarms per kind", alarms);
    reg.register("am_alarms_by_severity", "Active alarms per severity", severities);
    gauge_i(
        &mut reg,
        "am_alarms_acknowledged",
        "Active alarms acknowledged through the API",
        s.alarms.iter().filter(|a| a.acknowledged.is_some()).count() as u64,
    );

    gauge_i(
        &mut reg,
        "am_actions_in_flight",
        "Actions issued by the supervisor with no outcome yet",
        s.in_flight.len() as u64,
    );
    if let Some(x) = &s.executor {
        gauge_i(
            &mut reg,
            "am_executor_running",
            "Actions the executor runs",
            x.running as u64,
        );
        gauge_i(
            &mut reg,
            "am_executor_queued",
            "Actions the executor has queued",
            x.queued as u64,
        );
        let started = Family::<Labels, Counter>::default();
        let succeeded = Family::<Labels, Counter>::default();
        let failed = Family::<Labels, Counter>::default();
        let timed_out = Family::<Labels, Counter>::default();
        let seconds = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let max = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (op, o) in &x.ops {
            let l = vec![("op", op.clone())];
            started.get_or_create(&l).inc_by(o.started);
            succeeded.get_or_create(&l).inc_by(o.succeeded);
            failed.get_or_create(&l).inc_by(o.failed);
            timed_out.get_or_create(&l).inc_by(o.timed_out);
            seconds.get_or_create(&l).inc_by(o.total_s);
            max.get_or_create(&l).set(o.max_s);
        }
        reg.register(
            "am_executor_actions_started",
            "Actions started per operation",
            started,
        );
        reg.register(
            "am_executor_actions_succeeded",
            "Actions succeeded per operation",
            succeeded,
        );
        reg.register(
            "am_executor_actions_failed",
            "Actions failed per operation (timeouts included)",
            failed,
        );
        reg.register(
            "am_executor_actions_timed_out",
            "Actions that hit the executor's deadline per operation",
            timed_out,
        );
        reg.register(
            "am_executor_action_seconds",
            "Run time of finished actions per operation",
            seconds,
        );
        reg.register(
            "am_executor_action_max_seconds",
            "Longest run time of a finished action per operation",
            max,
        );
    }

    counter_u(
        &mut reg,
        "am_incidents",
        "Incidents so far (hosts and VMs)",
        c.incidents as u64,
    );
    gauge_i(
        &mut reg,
        "am_incidents_open",
        "Incidents not ended",
        c.open_incidents as u64,
    );
    counter_u(
        &mut reg,
        "am_recoveries",
        "VM incidents that ended with the VM answering again",
        c.recoveries as u64,
    );
    if let Some(m) = c.mttr_s {
        gauge_f(
            &mut reg,
            "am_mttr_seconds",
            "Mean time to recovery, from the decision to act to the VM answering",
            m,
        );
    }
    if let Some(a) = c.availability {
        gauge_f(
            &mut reg,
            "am_availability_ratio",
            "Estimated availability of the protected VMs since the daemon started",
            a,
        );
    }
    if let Some(a) = &c.admission {
        gauge_i(
            &mut reg,
            "am_host_failures_tolerated",
            "Host failures the cluster tolerates (admission control)",
            u64::from(a.host_failures_tolerated),
        );
        gauge_i(
            &mut reg,
            "am_host_failures_to_tolerate",
            "Host failures the policy asks the cluster to tolerate",
            u64::from(a.target),
        );
    }
    gauge_i(
        &mut reg,
        "am_manager_isolated",
        "1 when the manager considers itself isolated",
        u64::from(c.manager_isolated),
    );
    gauge_i(
        &mut reg,
        "am_storm_guard",
        "1 when the storm guard holds failover back",
        u64::from(c.storm),
    );
    gauge_i(
        &mut reg,
        "am_disarmed",
        "1 while an operator has disarmed automatic recovery",
        u64::from(c.disarmed.is_some()),
    );
    gauge_i(
        &mut reg,
        "am_evacuation_moves_pending",
        "Moves of evacuations under way not finished yet (queued or in flight)",
        c.evacuations
            .iter()
            .map(|e| (e.planned.saturating_sub(e.moved + e.failed)) as u64)
            .sum(),
    );
    gauge_f(
        &mut reg,
        "am_snapshot_age_seconds",
        "Time since the last supervisor step that changed something",
        s.now.since(s.at).as_secs_f64(),
    );
    crate::ha::register(&mut reg, s.ha.as_ref());
    reg
}

/// The snapshot in the OpenMetrics 1.0 text format (ends with `# EOF`).
pub fn render_openmetrics(s: &Snapshot) -> String {
    let mut out = String::new();
    if encode(&mut out, &registry(s)).is_err() {
        // Writing to a String does not fail; keep the output well-formed if it ever does.
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// The snapshot in the Prometheus text format 0.0.4.
///
/// Made from the OpenMetrics text: the `# EOF` and `# UNIT` lines go, and a counter's `# HELP` and
/// `# TYPE` lines name the `_total` series as 0.0.4 wants.
pub fn render_prometheus(s: &Snapshot) -> String {
    let om = render_openmetrics(s);
    let mut counters = std::collections::BTreeSet::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_owned());
            }
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let fixed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        match fixed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
