//! Faults to inject, and the text fault script.

use crate::duration::{format_duration, parse_duration};
use am_core::{DatastoreId, HostId, HvError, OperatorRequest, VmId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How deep a VM's fault goes, which decides which recovery step fixes it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultDepth {
    /// Any restart (reset, power cycle) fixes it.
    #[default]
    Transient,
    /// The disk is corrupt: a restart does not help; reverting to a snapshot taken before the fault
    /// (or restoring a good backup clone) does.
    Corrupt,
    /// The disk is lost, snapshots with it: only restoring a backup clone fixes it.
    DiskLost,
    /// Something about its host breaks it: only running it on another host fixes it.
    HostLocal,
}

impl FaultDepth {
    /// Whether the fault lives in the VM's disk (and so is copied by a clone).
    pub fn is_disk(self) -> bool {
        matches!(self, FaultDepth::Corrupt | FaultDepth::DiskLost)
    }

    /// The script word.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultDepth::Transient => "transient",
            FaultDepth::Corrupt => "corrupt",
            FaultDepth::DiskLost => "disklost",
            FaultDepth::HostLocal => "hostlocal",
        }
    }
}

impl FromStr for FaultDepth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "transient" => FaultDepth::Transient,
            "corrupt" => FaultDepth::Corrupt,
            "disklost" => FaultDepth::DiskLost,
            "hostlocal" => FaultDepth::HostLocal,
            other => {
                return Err(format!(
                    "unknown fault depth `{other}` (transient, corrupt, disklost or hostlocal)"
                ));
            }
        })
    }
}

/// The error an injected API fault makes a call return.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiErrorKind {
    /// [`HvError::Timeout`]; the operation did not happen.
    Timeout,
    /// [`HvError::Unreachable`] (vCenter).
    Unreachable,
    /// [`HvError::Busy`].
    Busy,
    /// A non-retryable [`HvError::Api`] (`SystemError`).
    Api,
    /// The operation happens, but the caller sees [`HvError::Timeout`] (the reply was lost).
    LostReply,
}

impl ApiErrorKind {
    /// The script word.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorKind::Timeout => "timeout",
            ApiErrorKind::Unreachable => "unreachable",
            ApiErrorKind::Busy => "busy",
            ApiErrorKind::Api => "api",
            ApiErrorKind::LostReply => "lost-reply",
        }
    }

    /// The error a call of `op` on `subject` returns.
    pub fn to_error(self, op: &str, subject: &str) -> HvError {
        match self {
            ApiErrorKind::Timeout | ApiErrorKind::LostReply => HvError::Timeout { op: op.to_owned() },
            ApiErrorKind::Unreachable => HvError::vcenter_unreachable(format!("injected fault during {op}")),
            ApiErrorKind::Busy => HvError::Busy {
                id: subject.to_owned(),
                detail: format!("injected fault during {op}"),
            },
            ApiErrorKind::Api => HvError::Api {
                fault: "SystemError".into(),
                message: format!("injected fault during {op} on {subject}"),
                retryable: false,
            },
        }
    }
}

impl FromStr for ApiErrorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "timeout" => ApiErrorKind::Timeout,
            "unreachable" => ApiErrorKind::Unreachable,
            "busy" => ApiErrorKind::Busy,
            "api" => ApiErrorKind::Api,
            "lost-reply" => ApiErrorKind::LostReply,
            other => {
                return Err(format!(
                    "unknown error kind `{other}` (timeout, unreachable, busy, api or lost-reply)"
                ));
            }
        })
    }
}

/// When an injected API fault fires.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiTrigger {
    /// The next `n` matching calls fail.
    Count(u32),
    /// Each matching call fails with this probability, until replaced (`0%` removes it).
    Probability(f64),
}

/// One fault to inject into the simulated cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// The host stops, its VMs with it. `permanent`: it cannot be revived.
    HostCrash {
        /// The host.
        host: HostId,
        /// Whether out-of-band revival fails.
        permanent: bool,
    },
    /// The host loses power (a PDU, a PSU): it stops with its VMs, and its BMC reads `Off`.
    /// `revive_host` powers it on again.
    HostPowerOff {
        /// The host.
        host: HostId,
    },
    /// The host and its VMs keep running but nobody reaches them over the network (its datastore
    /// heartbeat goes on): the split-brain trap.
    HostIsolate {
        /// The host.
        host: HostId,
    },
    /// Ends an isolation or a disconnection. Copies of VMs that were restarted elsewhere meanwhile
    /// are killed (they lost their disk locks).
    HostHeal {
        /// The host.
        host: HostId,
    },
    /// The management agent hiccups: vCenter shows the host not responding, but it and its guests
    /// answer pings. `reconnect_host` fixes it.
    HostDisconnect {
        /// The host.
        host: HostId,
    },
    /// A red health alarm (hardware sensor) on the host in vCenter (`red`), or cleared: it still
    /// runs, but may fail soon.
    HostHealth {
        /// The host.
        host: HostId,
        /// Raised (`true`) or cleared.
        red: bool,
    },
    /// The guest crashes (blue screen): still powered on, heartbeat red after a while.
    VmGuestCrash {
        /// The VM.
        vm: VmId,
        /// Which recovery fixes it.
        depth: FaultDepth,
    },
    /// The guest hangs: powered on, zero CPU, heartbeat red after a while.
    VmHang {
        /// The VM.
        vm: VmId,
        /// Which recovery fixes it.
        depth: FaultDepth,
    },
    /// The VM is powered off: by a user (`Some`), or by nobody, i.e. its process died (`None`).
    VmPowerOff {
        /// The VM.
        vm: VmId,
        /// Who.
        user: Option<String>,
    },
    /// A user (or nobody) powers the VM on where it is registered.
    VmPowerOn {
        /// The VM.
        vm: VmId,
        /// Who.
        user: Option<String>,
    },
    /// Calls of `method` (an [`am_core::Action::name`], `migrate`, `clone_vm`, `snapshot`,
    /// `changes`, or `*` for every hypervisor operation) fail.
    ApiFault {
        /// The method.
        method: String,
        /// The error.
        error: ApiErrorKind,
        /// How many or how often.
        trigger: ApiTrigger,
    },
    /// Calls of `method` (as in [`Fault::ApiFault`]) take `extra` longer (zero removes it).
    ApiLatency {
        /// The method.
        method: String,
        /// Added latency.
        extra: Duration,
    },
    /// Every probe is lost with this probability.
    ProbeLoss {
        /// Between 0 and 1.
        probability: f64,
    },
    /// The manager loses the network: vCenter calls fail, every probe fails.
    ManagerIsolate,
    /// The manager's network comes back.
    ManagerHeal,
    /// Not a fault: an operator asks the manager for something (evacuate a host, maintenance).
    /// The cluster is untouched; the scenario runner hands the request to the manager.
    Operator {
        /// The request.
        request: OperatorRequest,
    },
}

fn percent(p: f64) -> String {
    let v = (p * 1000.0).round() / 10.0;
    format!("{v}%")
}

impl fmt::Display for Fault {
    /// The script syntax (without `at`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::HostCrash { host, permanent } => {
                write!(
                    f,
                    "host {host} crash{}",
                    if *permanent { " permanent" } else { "" }
                )
            }
            Fault::HostPowerOff { host } => write!(f, "host {host} poweroff"),
            Fault::HostIsolate { host } => write!(f, "host {host} isolate"),
            Fault::HostHeal { host } => write!(f, "host {host} heal"),
            Fault::HostDisconnect { host } => write!(f, "host {host} disconnect"),
            Fault::HostHealth { host, red } => {
                write!(f, "host {host} health {}", if *red { "red" } else { "green" })
            }
            Fault::VmGuestCrash { vm, depth } => write!(f, "vm {vm} crash {}", depth.as_str()),
            Fault::VmHang { vm, depth } => write!(f, "vm {vm} hang {}", depth.as_str()),
            Fault::VmPowerOff { vm, user } => match user {
                Some(u) => write!(f, "vm {vm} poweroff by {u}"),
                None => write!(f, "vm {vm} poweroff"),
            },
            Fault::VmPowerOn { vm, user } => match user {
                Some(u) => write!(f, "vm {vm} poweron by {u}"),
                None => write!(f, "vm {vm} poweron"),
            },
            Fault::ApiFault {
                method,
                error,
                trigger,
            } => match trigger {
                ApiTrigger::Count(n) => write!(f, "api {method} fail {n} {}", error.as_str()),
                ApiTrigger::Probability(p) => {
                    write!(f, "api {method} fail {} {}", percent(*p), error.as_str())
                }
            },
            Fault::ApiLatency { method, extra } => {
                write!(f, "api {method} latency {}", format_duration(*extra))
            }
            Fault::ProbeLoss { probability } => write!(f, "probes loss {}", percent(*probability)),
            Fault::ManagerIsolate => f.write_str("manager isolate"),
            Fault::ManagerHeal => f.write_str("manager heal"),
            Fault::Operator { request } => match request {
                OperatorRequest::Evacuate {
                    host,
                    reason,
                    enter_maintenance,
                } => write!(
                    f,
                    "operator evacuate {host} reason {reason}{}",
                    if *enter_maintenance {
                        " enter-maintenance"
                    } else {
                        ""
                    }
                ),
                OperatorRequest::MaintenanceEnter { host } => write!(f, "operator maintenance enter {host}"),
                OperatorRequest::MaintenanceExit { host, return_vms } => write!(
                    f,
                    "operator maintenance exit {host}{}",
                    if *return_vms { " return-vms" } else { "" }
                ),
                OperatorRequest::Degraded { host, reason, .. } => {
                    write!(f, "operator degraded {host} reason {reason}")
                }
                OperatorRequest::DegradedClear { host, .. } => write!(f, "operator degraded-clear {host}"),
                OperatorRequest::Disarm { reason } => write!(f, "operator disarm reason {reason}"),
                OperatorRequest::Arm => f.write_str("operator arm"),
                OperatorRequest::EvacuateDatastore { datastore } => {
                    write!(f, "operator evacuate-datastore {datastore}")
                }
            },
        }
    }
}

/// A fault and when to inject it (virtual time since the simulator started).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledFault {
    /// When.
    pub at: Duration,
    /// What.
    pub fault: Fault,
    /// The script line it came from (0 when built in code).
    pub line: usize,
}

/// A parsed fault script: faults in time order (lines with the same time keep their order).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultScript {
    /// The faults, sorted by time.
    pub faults: Vec<ScheduledFault>,
}

/// A fault script line that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fault script line {line}: {message}")]
pub struct ScriptError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl FaultScript {
    /// Parses a script: one fault per line, `at <time> <fault>`; `#` starts a comment. See the
    /// crate documentation for the forms.
    pub fn parse(text: &str) -> Result<FaultScript, ScriptError> {
        let mut faults = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            let err = |message: String| ScriptError { line, message };
            if words.first() != Some(&"at") {
                return Err(err(format!("expected `at <time> ...`, found `{content}`")));
            }
            let at_word = words
                .get(1)
                .ok_or_else(|| err("missing time after `at`".into()))?;
            let at = parse_duration(at_word).map_err(|e| err(format!("bad time: {e}")))?;
            let fault = parse_fault(&words[2..]).map_err(err)?;
            faults.push(ScheduledFault { at, fault, line });
        }
        faults.sort_by_key(|f| f.at);
        Ok(FaultScript { faults })
    }

    /// A script from faults built in code.
    pub fn from_faults(faults: impl IntoIterator<Item = (Duration, Fault)>) -> FaultScript {
        let mut faults: Vec<ScheduledFault> = faults
            .into_iter()
            .map(|(at, fault)| ScheduledFault { at, fault, line: 0 })
            .collect();
        faults.sort_by_key(|f| f.at);
        FaultScript { faults }
    }
}

impl FromStr for FaultScript {
    type Err = ScriptError;
    fn from_str(s: &str) -> Result<Self, ScriptError> {
        FaultScript::parse(s)
    }
}

impl fmt::Display for FaultScript {
    /// The script text (parses back to the same script).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for sf in &self.faults {
            writeln!(f, "at {} {}", format_duration(sf.at), sf.fault)?;
        }
        Ok(())
    }
}

fn parse_percent(word: &str) -> Result<f64, String> {
    let num = word
        .strip_suffix('%')
        .ok_or_else(|| format!("expected a percentage like `20%`, found `{word}`"))?;
    let p: f64 = num.parse().map_err(|_| format!("`{word}` is not a percentage"))?;
    if !(0.0..=100.0).contains(&p) {
        return Err(format!("percentage `{word}` is not between 0% and 100%"));
    }
    Ok(p / 100.0)
}

fn no_more(words: &[&str]) -> Result<(), String> {
    match words.first() {
        None => Ok(()),
        Some(_) => Err(format!("unexpected `{}` at the end", words.join(" "))),
    }
}

fn parse_user(words: &[&str]) -> Result<Option<String>, String> {
    match words {
        [] => Ok(None),
        ["by", user] => Ok(Some((*user).to_owned())),
        ["by"] => Err("missing user name after `by`".into()),
        _ => Err(format!("expected `by <user>`, found `{}`", words.join(" "))),
    }
}

fn parse_fault(words: &[&str]) -> Result<Fault, String> {
    match words {
        [] => Err("missing fault after the time".into()),
        ["host", host, verb, rest @ ..] => {
            let host = HostId::from(*host);
            let fault = match *verb {
                "crash" => match rest {
                    [] => Fault::HostCrash {
                        host,
                        permanent: false,
                    },
                    ["permanent"] => Fault::HostCrash {
                        host,
                        permanent: true,
                    },
                    _ => {
                        return Err(format!(
                            "expected `permanent` or nothing, found `{}`",
                            rest.join(" ")
                        ));
                    }
                },
                "isolate" => Fault::HostIsolate { host },
                "poweroff" => Fault::HostPowerOff { host },
                "heal" => Fault::HostHeal { host },
                "disconnect" => Fault::HostDisconnect { host },
                "health" => match rest {
                    ["red"] => Fault::HostHealth { host, red: true },
                    ["green"] => Fault::HostHealth { host, red: false },
                    _ => return Err(format!("expected `red` or `green`, found `{}`", rest.join(" "))),
                },
                other => {
                    return Err(format!(
                        "unknown host fault `{other}` (crash, poweroff, isolate, heal, disconnect or health)"
                    ));
                }
            };
            if !matches!(fault, Fault::HostCrash { .. } | Fault::HostHealth { .. }) {
                no_more(rest)?;
            }
            Ok(fault)
        }
        ["host", ..] => Err("expected `host <id> <crash|poweroff|isolate|heal|disconnect|health red|health green>`".into()),
        ["vm", vm, verb, rest @ ..] => {
            let vm = VmId::from(*vm);
            let depth = |rest: &[&str]| -> Result<FaultDepth, String> {
                match rest {
                    [] => Ok(FaultDepth::Transient),
                    [d] => d.parse(),
                    _ => Err(format!("unexpected `{}` at the end", rest[1..].join(" "))),
                }
            };
            match *verb {
                "crash" => Ok(Fault::VmGuestCrash {
                    vm,
                    depth: depth(rest)?,
                }),
                "hang" => Ok(Fault::VmHang {
                    vm,
                    depth: depth(rest)?,
                }),
                "poweroff" => Ok(Fault::VmPowerOff {
                    vm,
                    user: parse_user(rest)?,
                }),
                "poweron" => Ok(Fault::VmPowerOn {
                    vm,
                    user: parse_user(rest)?,
                }),
                other => Err(format!(
                    "unknown vm fault `{other}` (crash, hang, poweroff or poweron)"
                )),
            }
        }
        ["vm", ..] => Err("expected `vm <id> <crash|hang|poweroff|poweron>`".into()),
        ["api", method, "fail", amount, kind, rest @ ..] => {
            no_more(rest)?;
            let error: ApiErrorKind = kind.parse()?;
            let trigger = if amount.ends_with('%') {
                ApiTrigger::Probability(parse_percent(amount)?)
            } else {
                ApiTrigger::Count(
                    amount
                        .parse()
                        .map_err(|_| format!("expected a count or a percentage, found `{amount}`"))?,
                )
            };
            Ok(Fault::ApiFault {
                method: (*method).to_owned(),
                error,
                trigger,
            })
        }
        ["api", _, "fail", ..] => Err("expected `api <method> fail <count|N%> <error kind>`".into()),
        ["api", method, "latency", extra, rest @ ..] => {
            no_more(rest)?;
            Ok(Fault::ApiLatency {
                method: (*method).to_owned(),
                extra: parse_duration(extra)?,
            })
        }
        ["api", ..] => Err("expected `api <method> fail ...` or `api <method> latency <time>`".into()),
        ["probes" | "probe", "loss", p, rest @ ..] => {
            no_more(rest)?;
            Ok(Fault::ProbeLoss {
                probability: parse_percent(p)?,
            })
        }
        ["probes" | "probe", ..] => Err("expected `probes loss <N%>`".into()),
        ["manager", "isolate", rest @ ..] => no_more(rest).map(|_| Fault::ManagerIsolate),
        ["manager", "heal", rest @ ..] => no_more(rest).map(|_| Fault::ManagerHeal),
        ["manager", ..] => Err("expected `manager isolate` or `manager heal`".into()),
        ["operator", "evacuate", host, rest @ ..] => {
            let mut reason = "maintenance".to_owned();
            let mut enter_maintenance = false;
            let mut rest = rest;
            loop {
                match rest {
                    [] => break,
                    ["enter-maintenance", more @ ..] => {
                        enter_maintenance = true;
                        rest = more;
                    }
                    ["reason", r, more @ ..] => {
                        (*r).clone_into(&mut reason);
                        rest = more;
                    }
                    _ => return Err(format!("unexpected `{}` at the end", rest.join(" "))),
                }
            }
            Ok(Fault::Operator {
                request: OperatorRequest::Evacuate {
                    host: HostId::from(*host),
                    reason,
                    enter_maintenance,
                },
            })
        }
        ["operator", "maintenance", "enter", host, rest @ ..] => {
            no_more(rest)?;
            Ok(Fault::Operator {
                request: OperatorRequest::MaintenanceEnter {
                    host: HostId::from(*host),
                },
            })
        }
        ["operator", "maintenance", "exit", host, rest @ ..] => {
            let return_vms = match rest {
                [] => false,
                ["return-vms"] => true,
                _ => return Err(format!("unexpected `{}` at the end", rest.join(" "))),
            };
            Ok(Fault::Operator {
                request: OperatorRequest::MaintenanceExit {
                    host: HostId::from(*host),
                    return_vms,
                },
            })
        }
        ["operator", "degraded", host, rest @ ..] => {
            let reason = match rest {
                [] => "predicted failure".to_owned(),
                ["reason", r] => (*r).to_owned(),
                _ => return Err(format!("unexpected `{}` at the end", rest.join(" "))),
            };
            Ok(Fault::Operator {
                request: OperatorRequest::Degraded {
                    host: HostId::from(*host),
                    reason,
                    source: "script".into(),
                },
            })
        }
        ["operator", "degraded-clear", host, rest @ ..] => {
            no_more(rest)?;
            Ok(Fault::Operator {
                request: OperatorRequest::DegradedClear {
                    host: HostId::from(*host),
                    source: "script".into(),
                },
            })
        }
        ["operator", "disarm", rest @ ..] => {
            let reason = match rest {
                [] => "operator".to_owned(),
                ["reason", r] => (*r).to_owned(),
                _ => return Err(format!("unexpected `{}` at the end", rest.join(" "))),
            };
            Ok(Fault::Operator {
                request: OperatorRequest::Disarm { reason },
            })
        }
        ["operator", "arm", rest @ ..] => {
            no_more(rest)?;
            Ok(Fault::Operator {
                request: OperatorRequest::Arm,
            })
        }
        ["operator", "evacuate-datastore", ds, rest @ ..] => {
            no_more(rest)?;
            Ok(Fault::Operator {
                request: OperatorRequest::EvacuateDatastore {
                    datastore: DatastoreId::from(*ds),
                },
            })
        }
        ["operator", ..] => Err(
            "expected `operator evacuate <host> [reason <why>] [enter-maintenance]`, `operator maintenance enter <host>`, `operator maintenance exit <host> [return-vms]`, `operator degraded <host> [reason <why>]`, `operator degraded-clear <host>`, `operator disarm [reason <why>]`, `operator arm` or `operator evacuate-datastore <datastore>`"
                .into(),
        ),
        [other, ..] => Err(format!(
            "unknown subject `{other}` (host, vm, api, probes, manager or operator)"
        )),
    }
}
