//! Stories told to the supervisor alone: observations in, commands and states checked. The
//! harness is here; the stories are in rooms: VMs (the ladder, power-offs, restarts of the
//! daemon), hosts (failure, isolation, revival, capacity) and the backup cache.

mod alarms;
mod ambiguous;
mod backup;
mod evacuate;
mod host;
mod operator;
mod placement;
mod vcenter;
mod vm;

use super::*;
use am_core::{Host, Resources, RestartPriority, Snapshot, SnapshotId};
use std::time::Duration;

struct Story {
    sup: Supervisor,
    now: Time,
    commands: Vec<Command>,
    log: Vec<LogEntry>,
}

fn inventory(hosts: usize, vms_per_host: usize) -> Inventory {
    let mut inv = Inventory::default();
    for h in 1..=hosts {
        let mut host = Host::new(format!("h{h}").as_str(), Resources::new(20_000, 64_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        host.storage_heartbeat = Some(Time::ZERO);
        inv.apply(&InventoryDelta::HostUpsert(host));
        for v in 1..=vms_per_host {
            let id = format!("vm-{h}{v}");
            let mut vm = Vm::new(
                id.as_str(),
                Resources::new(1_000, 8_000),
                format!("h{h}").as_str(),
            );
            vm.guest_address = Some(format!("10.1.{h}.{v}"));
            inv.apply(&InventoryDelta::VmUpsert(vm));
        }
    }
    inv
}

impl Story {
    /// A story without the backup cache (its snapshots would crowd the actions under test).
    fn new(cfg: Config, inv: Inventory) -> Story {
        let backup = BackupPolicy {
            snapshot_every: Duration::ZERO,
            ..cfg.backup.clone()
        };
        Story::with_backups(Config { backup, ..cfg }, inv)
    }

    fn with_backups(cfg: Config, inv: Inventory) -> Story {
        let mut s = Story {
            sup: Supervisor::new(cfg),
            now: Time::ZERO,
            commands: Vec::new(),
            log: Vec::new(),
        };
        s.feed(Observation::Inventory(inv));
        s
    }

    fn at(&mut self, secs: f64) -> &mut Self {
        self.now = Time::from_millis((secs * 1000.0) as u64);
        self.feed(Observation::Tick);
        self
    }

    fn feed(&mut self, obs: Observation) -> &mut Self {
        let out = self.sup.step(self.now, obs);
        // The VMs a step evaluates are exactly those not at rest, however they got there.
        if let Err(e) = self.sup.check_restless() {
            panic!("{e}");
        }
        // The VMs by host and each host's use, kept as the inventory changes, answer as it does.
        if let Err(e) = self.sup.check_by_host() {
            panic!("{e}");
        }
        self.commands.extend(out.commands);
        self.log.extend(out.log);
        self
    }

    fn guest(&mut self, vm: &str, alive: bool) -> &mut Self {
        self.feed(Observation::Liveness {
            subject: Subject::Vm(vm.into()),
            alive,
            evidence: "probe".into(),
        })
    }

    fn mgmt(&mut self, host: &str, alive: bool) -> &mut Self {
        self.feed(Observation::Liveness {
            subject: Subject::Host(host.into()),
            alive,
            evidence: "probe".into(),
        })
    }

    fn vm(&self, id: &str) -> Vm {
        self.sup.inventory().vms[&VmId::from(id)].clone()
    }

    fn host(&self, id: &str) -> Host {
        self.sup.inventory().hosts[&HostId::from(id)].clone()
    }

    fn upsert_vm(&mut self, vm: Vm) -> &mut Self {
        self.feed(Observation::Delta(InventoryDelta::VmUpsert(vm)))
    }

    fn upsert_host(&mut self, host: Host) -> &mut Self {
        self.feed(Observation::Delta(InventoryDelta::HostUpsert(host)))
    }

    fn connection(&mut self, host: &str, c: ConnectionState) -> &mut Self {
        let mut h = self.host(host);
        h.connection = c;
        self.upsert_host(h)
    }

    fn heartbeat(&mut self, host: &str, at: f64) -> &mut Self {
        let mut h = self.host(host);
        h.storage_heartbeat = Some(Time::from_millis((at * 1000.0) as u64));
        self.upsert_host(h)
    }

    /// The actions issued since the last call, as "name subject" strings.
    fn take_actions(&mut self) -> Vec<(ActionId, Action)> {
        let cmds = std::mem::take(&mut self.commands);
        cmds.into_iter()
            .filter_map(|c| match c {
                Command::Execute { id, action, .. } => Some((id, action)),
                Command::Alarm(_) | Command::Cancel { .. } => None,
            })
            .collect()
    }

    fn done(&mut self, id: ActionId, result: Result<ActionOutcome, HvError>) -> &mut Self {
        self.feed(Observation::ActionDone { id, result })
    }

    fn state(&self, vm: &str) -> VmState {
        self.sup.vm_state(&vm.into()).cloned().unwrap()
    }

    fn host_state(&self, host: &str) -> HostState {
        self.sup.host_state(&host.into()).cloned().unwrap()
    }

    fn alarmed(&self, kind: AlarmKind) -> bool {
        self.sup.alarms().any(|a| a.kind == kind)
    }
}

/// The reasons given for the failovers of these VMs.
fn failover_reasons(s: &Story) -> Vec<String> {
    s.log
        .iter()
        .filter_map(|e| match &e.kind {
            LogKind::Transition { to, reason, .. } if to == "recovering(failover)" => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn ok() -> Result<ActionOutcome, HvError> {
    Ok(ActionOutcome::Done)
}

fn unreachable() -> Result<ActionOutcome, HvError> {
    Err(HvError::Unreachable {
        target: "host".into(),
        detail: "down".into(),
    })
}

/// The host stops: its last storage heartbeat was written one second before.
fn crash_host(s: &mut Story, host: &str, at: f64) {
    s.at(at).heartbeat(host, (at - 1.0).max(0.0));
    s.mgmt(host, false);
    let vms: Vec<VmId> = s
        .sup
        .inventory()
        .vms_on(&host.into())
        .map(|v| v.id.clone())
        .collect();
    for vm in vms {
        s.guest(vm.as_str(), false);
    }
    s.connection(host, ConnectionState::NotResponding);
}
