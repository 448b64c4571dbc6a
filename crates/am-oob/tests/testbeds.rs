//! am-oob against the test beds: sushy-tools' Redfish emulator (fake driver) notifying a vcsim
//! test bed, over TLS with basic auth, and an admin vcsim whose VMs are the managed hosts. A
//! missing sushy-emulator or vcsim fails these tests (they never skip): `cargo xtask sushy
//! install`, `cargo xtask vcsim build`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use am_core::{PowerReading, PowerSource};
use am_oob::{AdminRevive, AdminSettings, AdminVcenter, Bmc, Failure, OutOfBand, RedfishSettings};
use am_testbed::{Spec, Sushy, SushySpec, Vcsim};
use vsphere_soap::{Password, Thumbprint, TlsMode};

fn managed() -> Vcsim {
    Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: false,
        ..Spec::default()
    })
}

fn bmc_settings(bmc: &Sushy, host: &str) -> RedfishSettings {
    let (user, password) = bmc.spec.user_password.clone().unwrap_or_default();
    let mut s = RedfishSettings::new(host, &bmc.url, &user, Password::new(password));
    s.system = Some(bmc.system_id(host).to_owned());
    s.tls = bmc.ca_file.clone().map_or(TlsMode::SystemRoots, TlsMode::CaFile);
    // sushy's fake driver applies a change 1-11 s after the request.
    s.confirm_timeout = Duration::from_secs(30);
    s.confirm_every = Duration::from_millis(300);
    s
}

fn tls_sushy(sim: &Vcsim, spec: impl FnOnce(&mut SushySpec)) -> Sushy {
    let mut s = SushySpec {
        user_password: Some(("admin".into(), "s3cret".into())),
        tls: true,
        ..sim.sushy_spec()
    };
    spec(&mut s);
    Sushy::start(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_over_tls_reads_fences_until_off_and_revives() {
    let sim = managed();
    let sushy = tls_sushy(&sim, |_| {});
    let host = "DC0_C0_H1";
    let bmc = Bmc::new(bmc_settings(&sushy, host)).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerReading::On);
    let t = std::time::Instant::now();
    bmc.fence().await.unwrap();
    let took = t.elapsed();
    println!("fence of {host} confirmed Off after {took:?}");
    // Confirmed Off means the host is down already: the notification came within the read.
    assert!(
        !sim.host_alive(host),
        "{host} alive after a confirmed fence:\n{}",
        sushy.log()
    );
    assert_eq!(sushy.power_state(host), "Off");
    assert_eq!(bmc.power_state().await.unwrap(), PowerReading::Off);
    // A second fence of an Off host sends nothing and succeeds.
    bmc.fence().await.unwrap();
    bmc.revive().await.unwrap();
    assert!(sim.host_alive(host), "{host} not revived:\n{}", sushy.log());
    assert_eq!(bmc.power_state().await.unwrap(), PowerReading::On);
    for other in ["DC0_C0_H0", "DC0_C0_H2"] {
        assert!(sim.host_alive(other), "{other} was touched");
    }
    // The system discovered without `system`: sushy lists three, so one must be named.
    let mut s = bmc_settings(&sushy, host);
    s.system = None;
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(
        matches!(e.failure(), Some(Failure::Config(m)) if m.contains("3 systems")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_certificate_is_checked_and_a_refusal_is_named() {
    let sim = managed();
    let sushy = tls_sushy(&sim, |s| s.disable_power_off = true);
    let host = "DC0_C0_H0";
    // Not trusted: the system's roots do not know the test CA.
    let mut s = bmc_settings(&sushy, host);
    s.tls = TlsMode::SystemRoots;
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(matches!(e.failure(), Some(Failure::Tls(_))), "{e}");
    // A wrong pin is refused, the right one works.
    let mut s = bmc_settings(&sushy, host);
    s.tls = TlsMode::Thumbprint(Thumbprint([7; 32]));
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(
        matches!(e.failure(), Some(Failure::Tls(m)) if m.contains("does not match the pinned")),
        "{e}"
    );
    let mut s = bmc_settings(&sushy, host);
    s.tls = TlsMode::Thumbprint(sushy.thumbprint.as_deref().unwrap().parse().unwrap());
    assert_eq!(
        Bmc::new(s).unwrap().power_state().await.unwrap(),
        PowerReading::On
    );
    // A wrong password: 401, named.
    let mut s = bmc_settings(&sushy, host);
    s.password = Password::new("wrong");
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(
        matches!(e.failure(), Some(Failure::Http { status: 401, .. })),
        "{e}"
    );
    // This BMC refuses to power off: the fence fails with its message, the host stays up.
    let e = Bmc::new(bmc_settings(&sushy, host))
        .unwrap()
        .fence()
        .await
        .unwrap_err();
    assert!(
        matches!(e.failure(), Some(Failure::Http { status: 400, message }) if message.contains("power off")),
        "{e}"
    );
    assert!(
        e.to_string().contains(host) && e.to_string().contains(&sushy.url),
        "{e}"
    );
    assert!(sim.host_alive(host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_vcenter_fences_and_revives_its_nested_hosts() {
    let sim = managed();
    let admin_bed = Vcsim::start(&Spec {
        vms_per_host: 0,
        nested_of: Some(sim.control.clone()),
        nested_hosts: sim.host_names(),
        ..Spec::default()
    });
    let mut s = AdminSettings::new(&admin_bed.url, "admin", Password::new("x"));
    s.tls = admin_bed
        .ca_file
        .clone()
        .map_or(TlsMode::SystemRoots, TlsMode::CaFile);
    for h in sim.host_names() {
        s.hosts.insert(h.clone(), h);
    }
    s.hosts.insert("ghost".into(), "no-such-vm".into());
    let mut cycle = s.clone();
    let mut oob = OutOfBand::new();
    oob.add_admin(AdminVcenter::new(s));
    oob.connect().await;
    let h = "DC0_C0_H2";
    assert_eq!(oob.power(h).await.unwrap(), PowerReading::On);
    oob.fence(h).await.unwrap();
    assert!(!sim.host_alive(h), "{h} alive after its VM was fenced");
    assert_eq!(oob.power(h).await.unwrap(), PowerReading::Off);
    oob.fence(h).await.unwrap();
    oob.revive(h).await.unwrap();
    assert!(
        sim.host_alive(h),
        "{h} not revived by the revert: {}",
        admin_bed.get("/nested")
    );
    assert_eq!(oob.power(h).await.unwrap(), PowerReading::On);
    let e = oob.power("ghost").await.unwrap_err().to_string();
    assert!(e.contains("no-such-vm") && e.contains(&admin_bed.url), "{e}");

    // A named snapshot, and power cycling.
    cycle.snapshot = Some("clean".into());
    let named = AdminVcenter::new(cycle.clone());
    named.fence(h).await.unwrap();
    named.revive(h).await.unwrap();
    assert!(sim.host_alive(h));
    cycle.snapshot = Some("nope".into());
    let e = AdminVcenter::new(cycle.clone())
        .revive(h)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no snapshot named \"nope\""), "{e}");
    cycle.revive = AdminRevive::PowerCycle;
    let cyc = AdminVcenter::new(cycle);
    cyc.revive(h).await.unwrap();
    cyc.fence(h).await.unwrap();
    cyc.revive(h).await.unwrap();
    assert!(sim.host_alive(h));
    let sent: Vec<String> = admin_bed.get("/nested")["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        sent,
        [
            "PowerOffVM_Task",
            "RevertToCurrentSnapshot_Task",
            "PowerOffVM_Task",
            "RevertToSnapshot_Task",
            "ResetVM_Task",
            "PowerOffVM_Task",
            "PowerOnVM_Task"
        ]
    );
    oob.stop().await;
}
