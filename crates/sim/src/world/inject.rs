//! Fault injection: [`InjectError`], checking a fault's ids ([`World::check_fault`]) and
//! applying a fault-script line to the world ([`World::inject`]): host crashes, isolations,
//! disconnections and heals, guest crashes and hangs, users' power-offs and power-ons (on the
//! truth, through the shared rules of `cluster.rs`), API faults and latency (handed to `api.rs`),
//! probe loss and manager isolation (handed to `network.rs`). Every attempt, applied or not, goes
//! to the fault history (`recorder.rs`); an applied one marks the feed dirty.

use super::World;
use super::cluster::Boot;
use crate::fault::{ApiTrigger, Fault};
use crate::truth::{FaultRecord, GuestState, HostCondition, VmFault};
use am_core::{DatastoreId, EventKind, HostId, OperatorRequest, Time, VmId};

/// Why a fault could not be injected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InjectError {
    /// The fault names a host the simulator does not know.
    #[error("fault `{fault}`: unknown host {host}")]
    UnknownHost {
        /// The fault, in script syntax.
        fault: String,
        /// The host.
        host: HostId,
    },
    /// The fault names a VM the simulator does not know.
    #[error("fault `{fault}`: unknown vm {vm}")]
    UnknownVm {
        /// The fault, in script syntax.
        fault: String,
        /// The VM.
        vm: VmId,
    },
    /// The fault names a datastore the simulator does not know.
    #[error("fault `{fault}`: unknown datastore {datastore}")]
    UnknownDatastore {
        /// The fault, in script syntax.
        fault: String,
        /// The datastore.
        datastore: DatastoreId,
    },
    /// A probability outside `[0, 1]`.
    #[error("fault `{fault}`: probability is not between 0 and 1")]
    BadProbability {
        /// The fault, in script syntax.
        fault: String,
    },
}

impl World {
    /// Checks a fault's ids without injecting it.
    pub fn check_fault(&self, fault: &Fault) -> Result<(), InjectError> {
        let text = || fault.to_string();
        let host_known = |h: &HostId| {
            self.hosts.contains_key(h)
                || self
                    .spares
                    .iter()
                    .any(|(name, s)| h.as_str() == name || h.as_str() == s.id)
        };
        let bad_p = |p: f64| !(0.0..=1.0).contains(&p);
        match fault {
            Fault::Operator {
                request: OperatorRequest::EvacuateDatastore { datastore },
            } if !self.datastores.contains_key(datastore) => Err(InjectError::UnknownDatastore {
                fault: text(),
                datastore: datastore.clone(),
            }),
            Fault::Operator { request } => match request.host() {
                Some(host) if !host_known(host) => Err(InjectError::UnknownHost {
                    fault: text(),
                    host: host.clone(),
                }),
                _ => Ok(()),
            },
            Fault::HostCrash { host, .. }
            | Fault::HostPowerOff { host }
            | Fault::HostIsolate { host }
            | Fault::HostHeal { host }
            | Fault::HostDisconnect { host }
            | Fault::HostHealth { host, .. }
                if !host_known(host) =>
            {
                Err(InjectError::UnknownHost {
                    fault: text(),
                    host: host.clone(),
                })
            }
            Fault::VmGuestCrash { vm, .. }
            | Fault::VmHang { vm, .. }
            | Fault::VmPowerOff { vm, .. }
            | Fault::VmPowerOn { vm, .. }
                if !self.vms.contains_key(vm) =>
            {
                Err(InjectError::UnknownVm {
                    fault: text(),
                    vm: vm.clone(),
                })
            }
            Fault::ApiFault {
                trigger: ApiTrigger::Probability(p),
                ..
            }
            | Fault::ProbeLoss { probability: p }
                if bad_p(*p) =>
            {
                Err(InjectError::BadProbability { fault: text() })
            }
            _ => Ok(()),
        }
    }

    /// Injects `fault` at `now`.
    pub fn inject(&mut self, now: Time, fault: Fault) -> Result<(), InjectError> {
        if let Err(e) = self.check_fault(&fault) {
            self.record.fault(FaultRecord {
                at: now,
                fault,
                applied: false,
                note: e.to_string(),
            });
            return Err(e);
        }
        let outcome = self.apply_fault(now, &fault);
        self.mark_dirty();
        self.record.fault(FaultRecord {
            at: now,
            fault,
            applied: outcome.is_ok(),
            note: outcome.err().unwrap_or_default(),
        });
        Ok(())
    }

    /// Applies a fault whose ids are known; `Err` says why it changed nothing.
    fn apply_fault(&mut self, now: Time, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::HostCrash { host, permanent } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                match h.condition {
                    HostCondition::Crashed { permanent: was } => {
                        if *permanent && !was {
                            h.condition = HostCondition::Crashed { permanent: true };
                            return Ok(());
                        }
                        return Err("already crashed".into());
                    }
                    _ => {
                        h.condition = HostCondition::Crashed {
                            permanent: *permanent,
                        }
                    }
                }
                self.stop_all_on(host);
            }
            Fault::HostPowerOff { host } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                if h.condition == HostCondition::Off {
                    return Err("already off".into());
                }
                h.condition = HostCondition::Off;
                self.stop_all_on(host);
            }
            Fault::HostIsolate { host } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                if !matches!(h.condition, HostCondition::Up | HostCondition::Disconnected) {
                    return Err(format!("host is {}", h.condition));
                }
                h.condition = HostCondition::Isolated;
            }
            Fault::HostHealth { host, red } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                h.health_alarm = red.then(|| "vCenter shows a red hardware health alarm".to_owned());
            }
            Fault::HostDisconnect { host } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                if h.condition != HostCondition::Up {
                    return Err(format!("host is {}", h.condition));
                }
                h.condition = HostCondition::Disconnected;
            }
            Fault::HostHeal { host } => {
                let h = self.hosts.get_mut(host).ok_or("host not in the cluster yet")?;
                if !matches!(h.condition, HostCondition::Isolated | HostCondition::Disconnected) {
                    return Err(format!("host is {}", h.condition));
                }
                h.condition = HostCondition::Up;
                h.last_heartbeat = now;
                // Copies restarted elsewhere hold the disk locks: the stale ones here die.
                for vm in self.vms.values_mut() {
                    let stale = vm.running_on.contains(host)
                        && vm.registered.as_ref() != Some(host)
                        && vm.running_on.len() >= 2;
                    if stale {
                        vm.running_on.retain(|h| h != host);
                    }
                }
            }
            Fault::VmGuestCrash { vm, depth } | Fault::VmHang { vm, depth } => {
                let hang = matches!(fault, Fault::VmHang { .. });
                let v = self.vms.get_mut(vm).ok_or("unknown vm")?;
                if !v.is_running() {
                    return Err("vm is not running".into());
                }
                let host = v.registered.clone().or_else(|| v.running_on.first().cloned());
                v.fault = Some(VmFault {
                    depth: *depth,
                    hang,
                    host,
                    since: now,
                });
                v.guest = if hang {
                    GuestState::Hung
                } else {
                    GuestState::Crashed
                };
                v.guest_since = now;
            }
            Fault::VmPowerOff { vm, user } => {
                let v = self.vms.get(vm).ok_or("unknown vm")?;
                let host = v.registered.clone().ok_or("vm is not registered")?;
                if !v.running_on.contains(&host) {
                    return Err("vm is not running".into());
                }
                let managed = self.hosts.get(&host).is_some_and(|h| h.condition.is_managed());
                if user.is_some() && !managed {
                    return Err(format!("vCenter cannot reach host {host}"));
                }
                let v = self.vms.get_mut(vm).ok_or("unknown vm")?;
                v.running_on.retain(|h| *h != host);
                if let Some(u) = user {
                    v.user_off = Some((u.clone(), now));
                }
                if managed {
                    self.feed.event(EventKind::VmPoweredOff {
                        vm: vm.clone(),
                        user: user.clone(),
                    });
                }
            }
            Fault::VmPowerOn { vm, user } => {
                let v = self.vms.get(vm).ok_or("unknown vm")?;
                let host = v.registered.clone().ok_or("vm is not registered")?;
                if v.running_on.contains(&host) {
                    return Err("vm is already on".into());
                }
                if !self.hosts.get(&host).is_some_and(|h| h.condition.is_managed()) {
                    return Err(format!("vCenter cannot reach host {host}"));
                }
                self.check_capacity(&host, vm).map_err(|e| e.to_string())?;
                self.boot(now, vm, &host, Boot::Plain, user.clone(), true);
            }
            Fault::ApiFault {
                method,
                error,
                trigger,
            } => self.api.add_fault(method, *error, *trigger)?,
            Fault::ApiLatency { method, extra } => self.api.set_latency(method, *extra),
            Fault::ProbeLoss { probability } => self.net.set_probe_loss(*probability),
            Fault::ManagerIsolate => self.net.set_manager_isolated(true),
            Fault::ManagerHeal => self.net.set_manager_isolated(false),
            // The manager's business: the cluster is untouched.
            Fault::Operator { .. } => {}
        }
        Ok(())
    }
}
