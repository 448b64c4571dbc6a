//! A small hand-built cluster told to the supervisor, with a board following it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_api::Board;
use am_core::{
    ActionOutcome, ClusterEvent, Command, EventKind, Host, Inventory, InventoryDelta, Observation,
    PowerState, Resources, RestartPriority, Subject, Time, Vm,
};
use executor::{ExecutorStatus, OpStats};
use std::collections::BTreeMap;
use std::time::Duration;
use supervisor::{Config, Supervisor};

/// The supervisor, the board, and the time.
pub struct Cluster {
    pub sup: Supervisor,
    pub board: Board,
    pub now: Time,
    pub exec: ExecutorStatus,
}

pub fn inventory() -> Inventory {
    let mut inv = Inventory::default();
    for (h, rack, ip) in [("h1", "rack-a", "10.0.0.1"), ("h2", "rack-b", "10.0.0.2")] {
        let mut host = Host::new(h, Resources::new(20_000, 65_536));
        host.failure_domain = Some(rack.into());
        host.mgmt_address = Some(ip.into());
        inv.apply(&InventoryDelta::HostUpsert(host));
    }
    let mut web = Vm::new("web", Resources::new(2_000, 4_096), "h1");
    web.priority = RestartPriority::High;
    inv.apply(&InventoryDelta::VmUpsert(web));
    inv.apply(&InventoryDelta::VmUpsert(Vm::new(
        "db",
        Resources::new(4_000, 8_192),
        "h1",
    )));
    let mut batch = Vm::new("batch", Resources::new(1_000, 2_048), "h2");
    batch.priority = RestartPriority::Disabled;
    inv.apply(&InventoryDelta::VmUpsert(batch));
    let mut idle = Vm::new("idle", Resources::new(1_000, 1_024), "h2");
    idle.power = PowerState::PoweredOff;
    inv.apply(&InventoryDelta::VmUpsert(idle));
    inv
}

impl Cluster {
    /// The inventory seen at t=0.
    pub fn new() -> Cluster {
        let mut cfg = Config::default();
        cfg.backup.snapshot_every = Duration::ZERO;
        let mut c = Cluster {
            sup: Supervisor::new(cfg),
            board: Board::new(),
            now: Time::ZERO,
            exec: ExecutorStatus {
                running: Vec::new(),
                queued: Vec::new(),
                stats: BTreeMap::new(),
                shutting_down: false,
            },
        };
        c.feed(Observation::Inventory(inventory()));
        c
    }

    pub fn feed(&mut self, obs: Observation) -> Vec<Command> {
        let out = self.sup.step(self.now, obs);
        self.board.observe(self.now, &out, &self.sup, Some(&self.exec));
        out.commands
    }

    pub fn at(&mut self, secs: u64) -> Vec<Command> {
        self.now = Time::from_secs(secs);
        self.feed(Observation::Tick)
    }

    /// `web` stops answering at 10 s, is reset at 11 s, answers again at 20 s; `db` is switched
    /// off by alice at 30 s; the board is last updated at 40 s.
    pub fn story() -> Cluster {
        let mut c = Cluster::new();
        c.at(10);
        c.feed(Observation::Liveness {
            subject: Subject::Vm("web".into()),
            alive: false,
            evidence: "3/3 pings lost".into(),
        });
        let cmds = c.at(11);
        let id = cmds
            .iter()
            .find_map(|cmd| match cmd {
                Command::Execute { id, .. } => Some(*id),
                Command::Alarm(_) | Command::Cancel { .. } => None,
            })
            .expect("web is reset");
        c.exec.stats.insert(
            "reset",
            OpStats {
                started: 1,
                succeeded: 1,
                total_time: Duration::from_millis(1500),
                max_time: Duration::from_millis(1500),
                ..OpStats::default()
            },
        );
        c.at(14);
        c.feed(Observation::ActionDone {
            id,
            result: Ok(ActionOutcome::Done),
        });
        c.at(20);
        c.feed(Observation::Liveness {
            subject: Subject::Vm("web".into()),
            alive: true,
            evidence: "answers".into(),
        });
        c.at(30);
        let mut db = c.sup.inventory().vms["db"].clone();
        db.power = PowerState::PoweredOff;
        c.feed(Observation::Delta(InventoryDelta::VmUpsert(db)));
        c.feed(Observation::Event(ClusterEvent {
            at: Time::from_secs(30),
            kind: EventKind::VmPoweredOff {
                vm: "db".into(),
                user: Some("alice".into()),
            },
        }));
        c.at(40);
        // A tick with nothing new does not reach the board through the engine's observer; make
        // sure this one does, so the snapshot is taken at 40 s.
        let out = c.sup.step(c.now, Observation::Tick);
        c.board.observe(c.now, &out, &c.sup, Some(&c.exec));
        c
    }

    /// `db` is powered on again: its alarm clears.
    pub fn power_on_db(&mut self, secs: u64) {
        self.now = Time::from_secs(secs);
        let mut db = self.sup.inventory().vms["db"].clone();
        db.power = PowerState::PoweredOn;
        self.feed(Observation::Delta(InventoryDelta::VmUpsert(db)));
    }
}

/// A raw HTTP/1.1 exchange: status, headers (lower-case names), body.
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` with extra header lines over a fresh connection and reads the whole answer.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[&str]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}
