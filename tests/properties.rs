//! Property tests: random fault sequences against a small simulated cluster, run through the real
//! engine in virtual time. Whatever happens:
//! - no VM ever runs on two hosts at once, and none leaves the inventory (with a host the manager
//!   removed);
//! - no VM a user powered off is powered on by the manager;
//! - no host's running VMs ever exceed its capacity;
//! - every protected VM whose host died ends up running when capacity exists (a spare host that can
//!   hold everything is in the pool, and faults are spaced wider than the storm window). A VM on a
//!   host that is still isolated at the end is exempt: the manager cannot see whether it runs
//!   there and, by design, never restarts it elsewhere.
//!
//! Two kinds of cluster: one with every signal (management probes, storage heartbeats, guest
//! probes) and no file locks, so that nothing but the manager's own judgement keeps a VM from a
//! second copy; and one as `am-daemon run` sees vCenter without probes (the connection state is
//! the only signal) with file locks, the guard the manager then relies on.
//!
//! The simulator knows the truth and records every violation the moment it happens.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use am_daemon::scenario::{self, Generate, Scenario};
use proptest::prelude::*;
use std::time::Duration;

#[derive(Clone, Debug)]
enum F {
    HostCrash { host: usize, permanent: bool },
    HostIsolate { host: usize, heal_after: Option<u64> },
    HostDisconnect { host: usize },
    VmCrash { vm: usize, depth: usize },
    VmHang { vm: usize },
    UserOff { vm: usize },
    CrashOff { vm: usize },
}

fn fault() -> impl Strategy<Value = F> {
    prop_oneof![
        (0..4usize, any::<bool>()).prop_map(|(host, permanent)| F::HostCrash { host, permanent }),
        (0..4usize, proptest::option::of(20..120u64))
            .prop_map(|(host, heal_after)| F::HostIsolate { host, heal_after }),
        (0..4usize).prop_map(|host| F::HostDisconnect { host }),
        (0..12usize, 0..4usize).prop_map(|(vm, depth)| F::VmCrash { vm, depth }),
        (0..12usize).prop_map(|vm| F::VmHang { vm }),
        (0..12usize).prop_map(|vm| F::UserOff { vm }),
        (0..12usize).prop_map(|vm| F::CrashOff { vm }),
    ]
}

/// The fault script: one fault every 25 s from 10 s on (wider than the storm window).
fn script(faults: &[F], hosts: usize, vms: usize) -> String {
    let mut lines = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let t = 10 + 25 * i as u64;
        let host = |h: usize| format!("h{}", h % hosts + 1);
        let vm = |v: usize| format!("vm-{:03}", v % vms + 1);
        match f {
            F::HostCrash { host: h, permanent } => lines.push(format!(
                "at {t}s host {} crash{}",
                host(*h),
                if *permanent { " permanent" } else { "" }
            )),
            F::HostIsolate { host: h, heal_after } => {
                lines.push(format!("at {t}s host {} isolate", host(*h)));
                if let Some(d) = heal_after {
                    lines.push(format!("at {}s host {} heal", t + d, host(*h)));
                }
            }
            F::HostDisconnect { host: h } => lines.push(format!("at {t}s host {} disconnect", host(*h))),
            F::VmCrash { vm: v, depth } => {
                let depth = ["transient", "corrupt", "disklost", "hostlocal"][*depth % 4];
                lines.push(format!("at {t}s vm {} crash {depth}", vm(*v)));
            }
            F::VmHang { vm: v } => lines.push(format!("at {t}s vm {} hang", vm(*v))),
            F::UserOff { vm: v } => lines.push(format!("at {t}s vm {} poweroff by mallory", vm(*v))),
            F::CrashOff { vm: v } => lines.push(format!("at {t}s vm {} poweroff", vm(*v))),
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 8,
        failure_persistence: None,
        // The same cases on every run (CI is reproducible); PROPTEST_CASES / PROPTEST_RNG_SEED
        // explore further.
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x05ee_da11),
        ),
        ..ProptestConfig::default()
    })]

    #[test]
    fn whatever_fails_no_vm_runs_twice_user_power_offs_stand_capacity_holds_and_protected_vms_run(
        hosts in 3..5usize,
        seed in 0..1000u64,
        faults in proptest::collection::vec(fault(), 1..7),
        one_signal in any::<bool>(),
    ) {
        let vms = 12;
        let scn = Scenario {
            description: String::new(),
            run_for: Duration::from_secs(10 + 25 * faults.len() as u64 + 400),
            faults: script(&faults, hosts, vms),
            // No file locks: nothing but the manager's own judgement keeps a VM from a second
            // copy, so the split-brain invariant checks that judgement.
            generate: Some(Generate {
                spares: 1,
                seed,
                spares_hold_everything: true,
                file_locks: one_signal,
                mgmt_probes: !one_signal,
                guest_probes: !one_signal,
                storage_heartbeats: !one_signal,
                ..Generate::new(hosts, vms)
            }),
            cluster: None,
            supervisor: supervisor::Config::default(),
            probe: None,
            log_backups: false,
            allow_down: Vec::new(),
            // As `run` sees vCenter without probes and without hooks: no fence, no revival.
            capabilities: one_signal.then_some(am_daemon::scenario::ScenarioCapabilities {
                revive: false,
                fence: false,
            }),
        };
        let outcome = scenario::run_blocking(&scn, None).expect("scenario runs");
        let sim = &outcome.sim;
        prop_assert!(
            sim.violations().is_empty(),
            "violations (one signal: {one_signal}): {:?}\nscript:\n{}",
            sim.violations(),
            scn.faults
        );
        // Protected VMs run (a VM whose every rung failed counts as not recovered), except on a
        // host still isolated: whether they run there is unknowable from outside.
        let down: Vec<_> = sim
            .protected_not_running()
            .into_iter()
            .filter(|vm| {
                let home = sim.vm_truth(vm).and_then(|t| t.registered);
                !home.and_then(|h| sim.host_truth(&h)).is_some_and(|h| h.condition == sim::HostCondition::Isolated)
            })
            .collect();
        prop_assert!(
            down.is_empty(),
            "protected VMs down at the end (one signal: {one_signal}): {:?}\nscript:\n{}",
            down,
            scn.faults
        );
    }
}
