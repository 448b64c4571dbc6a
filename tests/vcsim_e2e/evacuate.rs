//! Evacuation through `am-daemon run`'s API: the operator (or an Alertmanager alert) asks, the
//! VMs leave by live migration (MigrateVM_Task) within the bounds, the host enters maintenance
//! mode in vCenter; the disarm switch holds a host failure's recovery until armed.

use crate::common::{busiest, each_runs_once, hosts};
use crate::rund::{RunDaemon, TOKEN};
use am_core::{AlarmKind, HostId, OperatorRequest};
use am_testbed::{Spec, Vcsim};
use std::time::Duration;

/// Waits until the daemon shows `name` in maintenance and vCenter shows it empty.
async fn until_in_maintenance_and_empty(d: &RunDaemon, sim: &Vcsim, name: &str) {
    d.wait_for(
        &format!("{name} empty and in maintenance"),
        Duration::from_millis(250),
        |s| {
            let state = s.hosts.iter().find(|h| h.name == name).map(|h| h.state.clone());
            let left = hosts(sim).get(name).map(|(_, v)| v.len()).unwrap_or(usize::MAX);
            (state.as_deref() == Some("maintenance") && left == 0).then_some(())
        },
    )
    .await;
}

/// Every VM of `vms` runs on a host other than `name`, and none was lost.
fn all_moved_off(sim: &Vcsim, name: &str, vms: &[String], total: usize) {
    let after = hosts(sim);
    let moved: usize = after
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .map(|(_, (_, v))| v.len())
        .sum();
    assert_eq!(moved, total, "every VM is on another host, none lost");
    for v in vms {
        assert!(
            after
                .iter()
                .any(|(n, (_, on))| n.as_str() != name && on.contains(v)),
            "{v} runs on another host: {after:?}"
        );
    }
    each_runs_once(sim).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuated_host_is_emptied_within_the_bounds_and_enters_maintenance() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 6,
        tls: true,
        ..Spec::default()
    });
    // Every live migration takes 1.5 s in vCenter: the parallelism shows.
    sim.post("/delay?method=MigrateVM_Task&ms=1500&count=100");
    let d = RunDaemon::start(&sim, |cfg| {
        cfg.supervisor.evacuation_per_host = 3;
    })
    .await;
    let (name, moref, vms) = busiest(&sim);
    let total: usize = hosts(&sim).values().map(|(_, v)| v.len()).sum();
    d.ask(&OperatorRequest::Evacuate {
        host: HostId::from(moref.as_str()),
        reason: "maintenance".into(),
        enter_maintenance: true,
    })
    .await;
    // Its progress, as the status shows it: never more than 3 moves at once, several together.
    let mut widest = 0;
    d.wait_for("the evacuation to end", Duration::from_millis(100), |s| {
        for e in &s.cluster.evacuations {
            assert!(e.in_flight <= 3, "more moves at once than the bound: {e:?}");
            widest = widest.max(e.in_flight);
        }
        let state = s.hosts.iter().find(|h| h.name == name).map(|h| h.state.clone());
        (matches!(state.as_deref(), Some("drained" | "maintenance")) && s.cluster.evacuations.is_empty())
            .then_some(())
    })
    .await;
    assert!(
        widest >= 2,
        "the moves ran one at a time (at most {widest} in flight)"
    );
    until_in_maintenance_and_empty(&d, &sim, &name).await;
    all_moved_off(&sim, &name, &vms, total);

    // Taken back with its VMs: out of maintenance in vCenter, and they come back.
    d.ask(&OperatorRequest::MaintenanceExit {
        host: HostId::from(name.as_str()),
        return_vms: true,
    })
    .await;
    d.wait_for(&format!("{name}'s VMs back"), Duration::from_millis(250), |_| {
        let on = hosts(&sim).get(&name).map(|(_, v)| v.clone()).unwrap_or_default();
        vms.iter().all(|v| on.contains(v)).then_some(())
    })
    .await;
    each_runs_once(&sim).unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_alert_evacuates_its_host_into_maintenance() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let d = RunDaemon::start(&sim, |_| {}).await;
    let (name, _, vms) = busiest(&sim);
    let total: usize = hosts(&sim).values().map(|(_, v)| v.len()).sum();
    // Prometheus' hardware alert, as Alertmanager's webhook sends it: the host by its name.
    let alert = format!(
        r#"{{"version":"4","status":"firing","receiver":"am","alerts":[{{"status":"firing",
        "labels":{{"alertname":"HostMemoryErrors","host":"{name}","severity":"warning"}},
        "annotations":{{"summary":"correctable ECC errors rising"}}}}]}}"#
    );
    let api = d.url.trim_start_matches("http://").to_owned();
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = tokio::task::spawn_blocking(move || {
        am_testbed::http_with(
            &api,
            "POST",
            "/api/v1/alertmanager",
            &[("Authorization", &bearer)],
            Some(("application/json", &alert)),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 202, "{body}");
    until_in_maintenance_and_empty(&d, &sim, &name).await;
    all_moved_off(&sim, &name, &vms, total);
    let alarms = am_api::fetch_alarms(&d.url).await.unwrap();
    let degraded = alarms
        .iter()
        .find(|a| a.kind == AlarmKind::HostDegraded)
        .expect("a HostDegraded alarm");
    assert!(
        degraded.message.contains(&name) && degraded.message.contains("HostMemoryErrors"),
        "{}",
        degraded.message
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disarmed_a_crashed_host_is_reported_and_its_vms_wait_until_armed() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let d = RunDaemon::start(&sim, |cfg| {
        cfg.supervisor.single_signal_confirm = Duration::from_secs(2);
    })
    .await;
    d.ask(&OperatorRequest::Disarm {
        reason: "core switch upgrade".into(),
    })
    .await;
    d.wait_for("the Disarmed flag", Duration::from_millis(100), |s| {
        s.cluster.disarmed.is_some().then_some(())
    })
    .await;
    let (name, _, vms) = busiest(&sim);
    sim.post(&format!("/host/crash?name={name}"));
    // Seen and judged: the host is dead in the daemon's eyes, its VMs wait.
    let waiting = d
        .wait_for(&format!("{name} dead"), Duration::from_millis(200), |s| {
            let dead = s.hosts.iter().any(|h| h.name == name && h.state == "dead");
            let waiting = s
                .vms
                .iter()
                .filter(|v| vms.contains(&v.name) && v.state == "awaiting-capacity")
                .count();
            (dead && waiting > 0).then_some(waiting)
        })
        .await;
    assert!(waiting > 0);
    let runs = |v: &str| {
        sim.running()
            .iter()
            .any(|(vmx, on)| vmx.contains(&format!("/{v}.vmx")) && !on.is_empty())
    };
    for v in &vms {
        assert!(!runs(v), "{v} was restarted while disarmed: {:?}", sim.running());
    }
    // Armed: they are failed over, each running once.
    d.ask(&OperatorRequest::Arm).await;
    d.wait_for(
        &format!("{name}'s VMs running elsewhere"),
        Duration::from_millis(250),
        |_| vms.iter().all(|v| runs(v)).then_some(()),
    )
    .await;
    each_runs_once(&sim).unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_health_alarm_in_vcenter_evacuates_its_host_into_maintenance() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let d = RunDaemon::start(&sim, |_| {}).await;
    let (name, _, vms) = busiest(&sim);
    let total: usize = hosts(&sim).values().map(|(_, v)| v.len()).sum();
    // A hardware sensor alarm turns the host red in vCenter; it stays connected.
    sim.post(&format!("/host/health?name={name}&status=red"));
    until_in_maintenance_and_empty(&d, &sim, &name).await;
    all_moved_off(&sim, &name, &vms, total);
    let alarms = am_api::fetch_alarms(&d.url).await.unwrap();
    assert!(
        alarms
            .iter()
            .any(|a| a.kind == AlarmKind::HostDegraded && a.message.contains("from vcenter")),
        "{alarms:?}"
    );
    // Green again: the alarm clears, the host stays in maintenance until the operator says.
    sim.post(&format!("/host/health?name={name}&status=green"));
    d.wait_for("HostDegraded cleared", Duration::from_millis(250), |s| {
        (!s.alarms.iter().any(|a| a.kind == AlarmKind::HostDegraded)).then_some(())
    })
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_powered_off_vm_leaves_an_evacuated_host_cold_and_stays_off() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let d = RunDaemon::start(&sim, |_| {}).await;
    let (name, moref, vms) = busiest(&sim);
    let off = vms[0].clone();
    sim.post(&format!("/vm/power-off?name={off}&user=alice"));
    d.wait_for(&format!("{off} off by alice"), Duration::from_millis(200), |s| {
        s.alarms
            .iter()
            .any(|a| a.kind == AlarmKind::VmPoweredOff && a.message.contains("alice"))
            .then_some(())
    })
    .await;
    d.ask(&OperatorRequest::Evacuate {
        host: HostId::from(moref.as_str()),
        reason: "maintenance".into(),
        enter_maintenance: true,
    })
    .await;
    until_in_maintenance_and_empty(&d, &sim, &name).await;
    let after = hosts(&sim);
    assert!(
        after.iter().any(|(n, (_, on))| *n != name && on.contains(&off)),
        "{off} is registered on another host: {after:?}"
    );
    let running = sim.running();
    assert!(
        running
            .iter()
            .all(|(vmx, on)| !vmx.contains(&format!("/{off}.vmx")) || on.is_empty()),
        "{off} was powered on: {running:?}"
    );
    d.stop().await;
}
