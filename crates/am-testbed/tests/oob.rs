//! Out-of-band host control wired end to end: Redfish (sushy-tools' fake driver) notifying the
//! managed test bed, and an admin test bed whose VMs are the managed hosts. A missing
//! sushy-emulator fails these tests (it never skips them): `cargo xtask sushy install`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use am_testbed::{Spec, Sushy, SushySpec, Vcsim, http_with};

/// sushy applies a power change 1-11 s after the request, on a read.
const APPLY: Duration = Duration::from_secs(30);

fn managed() -> Vcsim {
    Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: false,
        ..Spec::default()
    })
}

/// The `.vmx` paths that run on `host`, by the liveness truth.
fn running_on(sim: &Vcsim, host: &str) -> Vec<String> {
    sim.running()
        .into_iter()
        .filter(|(_, hosts)| hosts.iter().any(|h| h == host))
        .map(|(vmx, _)| vmx)
        .collect()
}

fn connection(sim: &Vcsim, host: &str) -> String {
    sim.truth()["hosts"][host]["connection"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_redfish_force_off_powers_the_host_off_and_on_brings_it_back() {
    let sim = managed();
    let bmc = Sushy::start(&sim.sushy_spec());
    let (status, list) = bmc.request("GET", "/redfish/v1/Systems", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["Members@odata.count"], 3, "{list}");
    let host = "DC0_C0_H1";
    let (_, system) = bmc.request("GET", &bmc.system_path(host), None);
    assert_eq!(system["Name"], host, "{system}");
    assert_eq!(system["PowerState"], "On", "{system}");
    let before = running_on(&sim, host);
    assert!(!before.is_empty(), "no VM runs on {host} to stop");

    bmc.force(host, "ForceOff");
    // Pending: nothing read the system since, so the fake driver has not applied it.
    assert!(
        sim.host_alive(host),
        "{host} went down before the change was applied"
    );
    let took = bmc.wait_power(host, "Off", APPLY);
    assert!(took <= Duration::from_secs(12), "applied after {took:?}");
    assert!(
        !sim.host_alive(host),
        "{host} still alive after its BMC powered it off:\n{}",
        bmc.log()
    );
    assert_eq!(connection(&sim, host), "notResponding");
    assert!(running_on(&sim, host).is_empty(), "VMs still run on {host}");
    for other in ["DC0_C0_H0", "DC0_C0_H2"] {
        assert!(sim.host_alive(other), "{other} went down too");
    }

    bmc.force(host, "On");
    bmc.wait_power(host, "On", APPLY);
    assert!(
        sim.host_alive(host),
        "{host} not back after its BMC powered it on:\n{}",
        bmc.log()
    );
    assert_eq!(connection(&sim, host), "connected");
    // It rebooted: the VMs vCenter lists on it are powered off, none runs there.
    assert!(running_on(&sim, host).is_empty());
}

#[test]
fn a_redfish_restart_is_down_at_once_and_back_when_applied() {
    let sim = managed();
    let bmc = Sushy::start(&sim.sushy_spec());
    let host = "DC0_C0_H0";
    bmc.force(host, "ForceRestart");
    // The fake driver reports Off at once, restart pending, and notifies so.
    assert!(
        !sim.host_alive(host),
        "{host} alive during its restart:\n{}",
        bmc.log()
    );
    bmc.wait_power(host, "On", APPLY);
    assert!(
        sim.host_alive(host),
        "{host} not back after its restart:\n{}",
        bmc.log()
    );
}

#[test]
fn a_system_that_starts_off_is_not_a_host_going_down() {
    let sim = managed();
    let bmc = Sushy::start(&SushySpec {
        systems: vec![("DC0_C0_H2".into(), false)],
        notify_url: Some(sim.bmc_notify_url()),
        ..SushySpec::default()
    });
    assert_eq!(bmc.power_state("DC0_C0_H2"), "Off");
    // Only a change notifies; the host was never told anything.
    assert!(sim.host_alive("DC0_C0_H2"));
    bmc.force("DC0_C0_H2", "On");
    bmc.wait_power("DC0_C0_H2", "On", APPLY);
    assert!(sim.host_alive("DC0_C0_H2"));
}

#[test]
fn bmc_notify_acts_only_on_settled_power_states() {
    let sim = managed();
    let host = sim.control.trim_start_matches("http://").to_owned();
    let put = |body: &str| -> serde_json::Value {
        let (status, answer) =
            http_with(&host, "PUT", "/bmc/notify", &[], Some(("application/json", body))).unwrap();
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str(&answer).unwrap()
    };
    let pending = put(
        r#"{"uuid":"u","name":"DC0_C0_H0","power_state":"On","pending_power":{"power_state":"Off","apply_time":1}}"#,
    );
    assert_eq!(pending["action"], "none", "{pending}");
    assert!(sim.host_alive("DC0_C0_H0"));
    assert_eq!(
        put(r#"{"name":"DC0_C0_H0","power_state":"On"}"#)["action"],
        "none"
    );
    assert_eq!(put(r#"{"name":"nope","power_state":"Off"}"#)["action"], "none");
    assert_eq!(put("not json")["action"], "none");
    let off = put(r#"{"name":"DC0_C0_H0","power_state":"Off","pending_power":null}"#);
    assert_eq!(off["action"], "poweroff", "{off}");
    assert!(!sim.host_alive("DC0_C0_H0"));
    assert_eq!(
        put(r#"{"name":"DC0_C0_H0","power_state":"Off"}"#)["reason"],
        "already down"
    );
    let on = put(r#"{"name":"DC0_C0_H0","power_state":"On","pending_power":null}"#);
    assert_eq!(on["action"], "revive", "{on}");
    assert!(sim.host_alive("DC0_C0_H0"));
}

#[test]
fn redfish_over_tls_with_basic_auth() {
    let bmc = Sushy::start(&SushySpec {
        systems: vec![("DC0_C0_H0".into(), true)],
        notify_url: None,
        user_password: Some(("admin".into(), "s3cret".into())),
        tls: true,
        ..SushySpec::default()
    });
    assert!(bmc.url.starts_with("https://127.0.0.1:"), "{}", bmc.url);
    assert!(
        bmc.plain_url.starts_with("http://127.0.0.1:"),
        "{}",
        bmc.plain_url
    );
    let ca = bmc.ca_file.clone().expect("a CA file with TLS");
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(bmc.thumbprint.as_deref().map(|t| t.split(':').count()), Some(32));

    let systems = "/redfish/v1/Systems";
    assert_eq!(bmc.request_as(None, "GET", systems, None).0, 401);
    assert_eq!(
        bmc.request_as(Some("Basic YWRtaW46bm8="), "GET", systems, None).0,
        401
    );
    assert_eq!(bmc.request("GET", systems, None).0, 200);
    assert_eq!(
        bmc.request_as(None, "GET", "/redfish/v1/", None).0,
        200,
        "the service root stays open"
    );

    // The HTTPS endpoint itself, verified against the CA, with Python's requests (sushy's own).
    let script = "import sys, requests\n\
        url, ca, path = sys.argv[1:4]\n\
        ok = requests.get(url + path, verify=ca, auth=('admin', 's3cret'), timeout=30)\n\
        bad = requests.get(url + path, verify=ca, auth=('admin', 'wrong'), timeout=30)\n\
        print(ok.status_code, ok.json()['PowerState'], bad.status_code)\n";
    let out = Command::new(bmc.python())
        .args([
            "-c",
            script,
            &bmc.url,
            ca.to_str().unwrap(),
            &bmc.system_path("DC0_C0_H0"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "HTTPS check failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        bmc.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200 On 401");
}

#[test]
fn the_admin_bed_powers_its_host_vms_and_the_managed_hosts_follow() {
    let sim = managed();
    let hosts = sim.host_names();
    assert_eq!(hosts, ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"]);
    let admin = Vcsim::start(&Spec {
        hosts: 2,
        vms_per_host: 0,
        nested_of: Some(sim.control.clone()),
        nested_hosts: hosts.clone(),
        ..Spec::default()
    });

    // Its inventory lists one powered-on VM per managed host, named alike.
    let inv = admin.inventory();
    let mut vms: Vec<(String, String, String)> = inv
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["vms"].as_array().cloned().unwrap_or_default())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("nested_host"), s("power"))
        })
        .collect();
    vms.sort();
    let want: Vec<_> = hosts
        .iter()
        .map(|h| (h.clone(), h.clone(), "poweredOn".to_owned()))
        .collect();
    assert_eq!(vms, want, "{inv}");
    let nested = admin.get("/nested");
    assert_eq!(nested["of"], sim.control.as_str());
    assert!(
        nested["vms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["clean"].as_str().is_some_and(|s| s.starts_with("snapshot-"))),
        "{nested}"
    );

    let h = "DC0_C0_H2";
    assert!(!running_on(&sim, h).is_empty(), "no VM runs on {h} to stop");
    admin.post(&format!("/vm/power-off?name={h}&user=ops"));
    assert!(
        !sim.host_alive(h),
        "{h} alive after its VM was powered off: {}",
        admin.get("/nested")
    );
    assert!(running_on(&sim, h).is_empty());
    assert_eq!(connection(&sim, h), "notResponding");
    assert!(sim.host_alive("DC0_C0_H0") && sim.host_alive("DC0_C0_H1"));

    // A revert that suppresses the power-on leaves the VM off: no revive.
    let r = admin.post(&format!(
        "/vm/revert?name={h}&snapshot=clean&suppress_power_on=true"
    ));
    assert_eq!(r["power"], "poweredOff", "{r}");
    assert!(!sim.host_alive(h));

    // The revert to clean (taken powered on, with memory) powers it on: the host is revived.
    let r = admin.post(&format!("/vm/revert?name={h}&snapshot=clean"));
    assert_eq!(r["power"], "poweredOn", "{r}");
    assert!(
        sim.host_alive(h),
        "{h} not revived by the revert: {}",
        admin.get("/nested")
    );
    assert_eq!(connection(&sim, h), "connected");

    // Off and on again, then a reset: each ends with the host alive.
    admin.post(&format!("/vm/power-off?name={h}&user=ops"));
    assert!(!sim.host_alive(h));
    admin.post(&format!("/vm/power-on?name={h}"));
    assert!(sim.host_alive(h));
    admin.post(&format!("/vm/reset?name={h}"));
    assert!(sim.host_alive(h));
    admin.post(&format!("/vm/power-off?name={h}&user=ops"));
    assert!(!sim.host_alive(h));
    let r = admin.post(&format!("/vm/revert?name={h}"));
    assert_eq!(r["power"], "poweredOn", "the current snapshot is clean: {r}");
    assert!(sim.host_alive(h));

    let sent = admin.get("/nested")["sent"].clone();
    let paths: Vec<(String, String, u64)> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["method"].as_str().unwrap_or_default().to_owned(),
                s["path"].as_str().unwrap_or_default().to_owned(),
                s["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let off = format!("/host/poweroff?name={h}");
    let revive = format!("/host/revive?name={h}");
    assert_eq!(
        paths,
        [
            ("PowerOffVM_Task".to_owned(), off.clone(), 200),
            ("RevertToSnapshot_Task".to_owned(), revive.clone(), 200),
            ("PowerOffVM_Task".to_owned(), off.clone(), 200),
            ("PowerOnVM_Task".to_owned(), revive.clone(), 200),
            ("ResetVM_Task".to_owned(), revive.clone(), 200),
            ("PowerOffVM_Task".to_owned(), off, 200),
            ("RevertToCurrentSnapshot_Task".to_owned(), revive, 200),
        ],
        "{sent}"
    );
}
