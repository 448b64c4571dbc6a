//! Manager HA in `run` (`[etcd]`, cargo feature `etcd`): before anything touches vCenter, the
//! daemon campaigns for its unit; as a standby it only watches the leader key. Once it leads, it
//! restores from the unit's journal in etcd and reconciles unfinished intents exactly as a
//! restarted daemon does (the same [`crate::journal::restore_of`]), and every action goes through
//! [`Fenced`]: none is handed to vCenter unless `action_margin` of the lease is left.
//!
//! Losing the lease (a refused fenced write, no renewal before the lease runs out, etcd saying it
//! is gone) stops the engine and `run` returns [`RunError::LeadershipLost`]: the process exits
//! (status 1) and its supervisor (systemd `Restart=always`) starts it again, as a standby. Exiting
//! rather than stepping down in-process drops every call still in flight with the process.

use super::RunError;
use crate::config::DaemonConfig;

/// What is known of the unit's leadership: the status board's own view of it.
pub use am_api::HaView as HaState;

#[cfg(not(feature = "etcd"))]
mod imp {
    use super::*;

    /// This build has no etcd: alone, or refused with the feature's name.
    pub(crate) enum Role {
        /// No `[etcd]` section: the only daemon.
        Alone,
    }

    pub(crate) async fn lead<F: std::future::Future<Output = ()>>(
        cfg: &DaemonConfig,
        _won: Option<()>,
        _shutdown: std::pin::Pin<&mut F>,
        _board: &am_api::Board,
    ) -> Result<Option<Role>, RunError> {
        if cfg.etcd.is_some() {
            return Err(RunError::EtcdNotBuilt);
        }
        Ok(Some(Role::Alone))
    }
}

#[cfg(feature = "etcd")]
mod imp {
    use super::*;
    use crate::config::EtcdConfig;
    use am_core::{Action, ActionOutcome, HvError, Hypervisor};
    use std::sync::Arc;
    use std::time::Duration;

    /// How this daemon runs its unit.
    pub(crate) enum Role {
        /// No `[etcd]` section: the only daemon.
        Alone,
        /// It leads its unit.
        Leader(Box<Leading>),
    }

    /// A daemon that leads its unit.
    pub(crate) struct Leading {
        pub etcd: am_etcd::Etcd,
        pub lease: am_etcd::Lease,
        pub journal: am_etcd::EtcdJournal,
        pub recovered: am_store::Recovered,
        pub history: am_etcd::History,
        pub margin: Duration,
    }

    fn settings(e: &EtcdConfig) -> Result<am_etcd::Settings, RunError> {
        let mut s = am_etcd::Settings::new(e.endpoints.clone(), e.unit.clone(), e.member_name());
        s.prefix = e.prefix.clone();
        s.lease_ttl = e.lease_ttl;
        s.connect_timeout = e.connect_timeout;
        s.request_timeout = e.request_timeout;
        s.tls = e.ca_file.as_ref().map(|ca| am_etcd::Tls {
            ca_file: ca.clone(),
            cert_file: e.cert_file.clone(),
            key_file: e.key_file.clone(),
            domain: None,
        });
        if let (Some(user), Some(pw)) = (&e.user, &e.password) {
            let secret = pw.read("etcd.password")?;
            s.user = Some((user.clone(), am_etcd::Password::new(secret.expose())));
        }
        Ok(s)
    }

    fn publish(board: &am_api::Board, state: &HaState) {
        board.set_ha(Some(state.clone()));
    }

    /// Connects to etcd and campaigns until this daemon leads its unit (`Some`), or `shutdown`
    /// completes first (`None`). Without `[etcd]`: [`Role::Alone`] at once.
    pub(crate) async fn lead<F: std::future::Future<Output = ()>>(
        cfg: &DaemonConfig,
        won: Option<(am_etcd::Etcd, am_etcd::Lease)>,
        shutdown: std::pin::Pin<&mut F>,
        board: &am_api::Board,
    ) -> Result<Option<Role>, RunError> {
        let Some(e) = &cfg.etcd else {
            return Ok(Some(Role::Alone));
        };
        if let Some((etcd, lease)) = won {
            return open(e, etcd, lease).await.map(Some);
        }
        let etcd = am_etcd::Etcd::connect(settings(e)?).await?;
        let s = etcd.settings().clone();
        tracing::info!(endpoints = %s.endpoints.join(","), unit = %s.unit, name = %s.name, "campaigning");
        let history = am_etcd::history(&etcd).await.unwrap_or_default();
        let standby_board = board.clone();
        let watch = Arc::new(std::sync::Mutex::new(NoLeader::new(
            cfg,
            s.unit.clone(),
            e.lease_ttl * 2,
        )?));
        let seen = watch.clone();
        let mut state = HaState {
            unit: s.unit.clone(),
            name: s.name.clone(),
            takeovers: history.takeovers,
            leases_lost: history.leases_lost,
            ..HaState::default()
        };
        let campaign = am_etcd::campaign(&etcd, e.poll_interval, move |l| {
            state.leader = l.map(|l| l.name.clone());
            state.token = l.map(|l| l.token);
            state.lease_remaining_ms =
                l.map(|l| u64::try_from(l.lease_remaining.as_millis()).unwrap_or(u64::MAX));
            publish(&standby_board, &state);
            if let Ok(mut w) = seen.lock() {
                w.saw(l.is_some());
            }
        });
        let lease = tokio::select! {
            lease = campaign => lease?,
            () = shutdown => return Ok(None),
        };
        // This daemon leads now: a unit-without-leader alarm it raised is over.
        if let Ok(mut w) = watch.lock() {
            w.clear();
        }
        open(e, etcd, lease).await.map(Some)
    }

    /// A standby's watch for a unit nobody leads: after `after` with no leader seen (and none
    /// taken over by this daemon: etcd does not answer), [`AlarmKind::UnitWithoutLeader`] goes to
    /// the log and the webhook; it is cleared when a leader is seen again.
    ///
    /// [`AlarmKind::UnitWithoutLeader`]: am_core::AlarmKind::UnitWithoutLeader
    pub(crate) struct NoLeader {
        unit: String,
        after: Duration,
        since: Option<std::time::Instant>,
        started: std::time::Instant,
        raised: bool,
        sinks: Vec<Box<dyn crate::alarm::AlarmSink>>,
    }

    impl NoLeader {
        fn new(cfg: &DaemonConfig, unit: String, after: Duration) -> Result<NoLeader, RunError> {
            let mut sinks: Vec<Box<dyn crate::alarm::AlarmSink>> = vec![Box::new(crate::alarm::LogSink)];
            if let Some(url) = &cfg.alarms.webhook_url {
                sinks.push(Box::new(crate::alarm::WebhookSink::new(
                    url,
                    cfg.alarms.alertmanager,
                )?));
            }
            Ok(NoLeader {
                unit,
                after,
                since: None,
                started: std::time::Instant::now(),
                raised: false,
                sinks,
            })
        }

        fn now(&self) -> am_core::Time {
            am_core::Time::from_millis(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
        }

        fn send(&mut self, change: &am_core::AlarmChange) {
            for sink in &mut self.sinks {
                sink.deliver(change);
            }
        }

        /// One look at the leader key: `true` when someone leads.
        pub(crate) fn saw(&mut self, leader: bool) {
            if leader {
                self.since = None;
                self.clear();
                return;
            }
            let since = *self.since.get_or_insert_with(std::time::Instant::now);
            if !self.raised && since.elapsed() >= self.after {
                self.raised = true;
                let alarm = am_core::Alarm {
                    kind: am_core::AlarmKind::UnitWithoutLeader,
                    subject: am_core::Subject::Manager,
                    name: Some(self.unit.clone()),
                    severity: am_core::Severity::Critical,
                    message: format!(
                        "unit {}: no daemon has led it for {} s and this standby cannot take it over (etcd does not answer); nothing watches its VMs",
                        self.unit,
                        since.elapsed().as_secs()
                    ),
                    at: self.now(),
                };
                self.send(&am_core::AlarmChange::Raise(alarm));
            }
        }

        /// Clears a raised alarm (a leader is seen, or this daemon leads now).
        pub(crate) fn clear(&mut self) {
            if self.raised {
                self.raised = false;
                let at = self.now();
                self.send(&am_core::AlarmChange::Clear {
                    kind: am_core::AlarmKind::UnitWithoutLeader,
                    subject: am_core::Subject::Manager,
                    at,
                });
            }
        }
    }

    /// The leader's side: the unit's journal read from etcd.
    async fn open(e: &EtcdConfig, etcd: am_etcd::Etcd, lease: am_etcd::Lease) -> Result<Role, RunError> {
        let s = etcd.settings().clone();
        let (journal, recovered, history) = am_etcd::EtcdJournal::open(&etcd, &lease).await?;
        tracing::info!(
            unit = %s.unit,
            token = lease.token(),
            takeovers = history.takeovers,
            unfinished = recovered.unfinished.len(),
            "leading the unit: restoring from its journal in etcd"
        );
        Ok(Role::Leader(Box::new(Leading {
            etcd,
            lease,
            journal,
            recovered,
            history,
            margin: e.margin(),
        })))
    }

    /// The configuration of one unit of a sharded daemon: the cluster of that name, the unit's
    /// keys, and the API on `api.listen`'s port plus one plus the unit's place in `units`.
    pub(crate) fn unit_config(cfg: &DaemonConfig, unit: &str, index: usize) -> DaemonConfig {
        let mut c = cfg.clone();
        if let Some(vc) = c.vcenter.as_mut() {
            vc.clusters = vec![unit.to_owned()];
        }
        if let Some(e) = c.etcd.as_mut() {
            e.unit = unit.to_owned();
            e.units = Vec::new();
        }
        let port = c.api.listen.port();
        if port != 0 {
            let offset = u16::try_from(index + 1).unwrap_or(u16::MAX);
            c.api.listen.set_port(port.saturating_add(offset));
        }
        c
    }

    /// A sharded daemon (`[etcd] units`): joins the members, and runs one engine (a `run_with`
    /// on the unit's configuration, without a campaign) per unit it leads, until `shutdown`.
    /// A unit whose lease is lost stops its engine only; the daemon may lead it again later.
    pub(crate) async fn run_sharded(
        cfg: DaemonConfig,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), RunError> {
        use std::collections::BTreeMap;
        let Some(e) = cfg.etcd.clone() else {
            return Err(RunError::EtcdNotBuilt);
        };
        let etcd = am_etcd::Etcd::connect(settings(&e)?).await?;
        let mut member = am_etcd::shard::Member::join(&etcd, e.units.clone(), e.poll_interval).await?;
        tracing::info!(name = %etcd.settings().name, units = ?e.units, "joined the members");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut running: BTreeMap<String, tokio::task::JoinHandle<bool>> = BTreeMap::new();
        // A unit whose engine failed (vCenter down, its API port taken) waits a lease's TTL
        // before it is run again: no hot loop.
        let mut failed: BTreeMap<String, std::time::Instant> = BTreeMap::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let done: Vec<String> = running
                .iter()
                .filter(|(_, t)| t.is_finished())
                .map(|(u, _)| u.clone())
                .collect();
            for unit in done {
                if let Some(t) = running.remove(&unit)
                    && !t.await.unwrap_or(false)
                {
                    failed.insert(unit, std::time::Instant::now());
                }
            }
            failed.retain(|_, at| at.elapsed() < e.lease_ttl);
            for (unit, lease) in member.led() {
                if running.contains_key(&unit) || failed.contains_key(&unit) {
                    continue;
                }
                let index = e.units.iter().position(|u| *u == unit).unwrap_or(0);
                let unit_cfg = unit_config(&cfg, &unit, index);
                let extras = crate::run::RunExtras {
                    lease: Some((etcd.for_unit(&unit), lease)),
                    ..crate::run::RunExtras::default()
                };
                let mut stop = stop_rx.clone();
                let name = unit.clone();
                let task: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RunError>> + Send>> =
                    Box::pin(crate::run::run_with(unit_cfg, extras, async move {
                        let _ = stop.wait_for(|s| *s).await.is_ok();
                    }));
                tracing::info!(unit = %name, api = %unit_config(&cfg, &unit, index).api.listen, "running the unit");
                running.insert(
                    unit,
                    tokio::spawn(async move {
                        match task.await {
                            Ok(()) => {
                                tracing::info!(unit = %name, "the unit's engine stopped");
                                true
                            }
                            Err(err) => {
                                tracing::error!(unit = %name, error = %err, "the unit's engine stopped");
                                false
                            }
                        }
                    }),
                );
            }
            tokio::select! {
                () = &mut shutdown => break,
                _ = member.changed() => {}
                () = tokio::time::sleep(e.poll_interval) => {}
            }
        }
        let _ = stop_tx.send(true);
        for (_, t) in running {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        Ok(())
    }

    impl Leading {
        /// Keeps the board's view of the leadership fresh (the lease's remaining time).
        pub(crate) fn show(&self, board: &am_api::Board) {
            let lease = self.lease.clone();
            let board = board.clone();
            let mut state = HaState {
                unit: lease.unit().to_owned(),
                name: lease.name().to_owned(),
                leading: true,
                leader: Some(lease.name().to_owned()),
                token: Some(lease.token()),
                lease_remaining_ms: None,
                takeovers: self.history.takeovers,
                leases_lost: self.history.leases_lost,
            };
            tokio::spawn(async move {
                loop {
                    state.lease_remaining_ms =
                        Some(u64::try_from(lease.remaining().as_millis()).unwrap_or(u64::MAX));
                    state.leading = !lease.is_lost();
                    publish(&board, &state);
                    if lease.is_lost() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    }

    /// The hypervisor of a leader: an action starts only while `margin` of the lease is left;
    /// otherwise it fails as "vCenter not reached" (counted against nothing; the engine stops
    /// once the lease is lost).
    pub(crate) struct Fenced {
        pub inner: Arc<dyn Hypervisor>,
        pub lease: am_etcd::Lease,
        pub margin: Duration,
    }

    #[async_trait::async_trait]
    impl Hypervisor for Fenced {
        async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError> {
            if let Err(e) = self.lease.check(self.margin) {
                tracing::warn!(action = action.name(), error = %e, "not acting: the lease does not cover the action");
                return Err(HvError::Unreachable {
                    target: am_core::error::MANAGEMENT_SERVER.into(),
                    detail: format!("not sent: {e}"),
                });
            }
            self.inner.execute(action).await
        }
    }
}

pub(crate) use imp::*;

#[cfg(all(test, feature = "etcd"))]
mod tests {
    use super::imp::Fenced;
    use am_core::{Action, ActionOutcome, HvError, Hypervisor};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl Hypervisor for Counting {
        async fn execute(&self, _action: &Action) -> Result<ActionOutcome, HvError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(ActionOutcome::Done)
        }
    }

    /// An action reaches the hypervisor only while the margin of the lease is left; refused, it
    /// fails as "vCenter not reached" (counted against nothing) and never calls it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_action_starts_only_while_the_lease_covers_its_margin() {
        let server = am_testbed::EtcdServer::start();
        let mut s = am_etcd::Settings::new(vec![server.url.clone()], "vc1", "a");
        s.lease_ttl = Duration::from_secs(3);
        s.request_timeout = Duration::from_secs(1);
        let etcd = am_etcd::Etcd::connect(s).await.unwrap();
        let lease = am_etcd::campaign(&etcd, Duration::from_millis(100), |_| {})
            .await
            .unwrap();
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let reset = Action::Reset { vm: "vm-1".into() };
        let covered = Fenced {
            inner: inner.clone(),
            lease: lease.clone(),
            margin: Duration::from_secs(1),
        };
        assert!(covered.execute(&reset).await.is_ok());
        assert_eq!(inner.0.load(Ordering::SeqCst), 1, "within the lease: called");
        let longer = Fenced {
            inner: inner.clone(),
            lease: lease.clone(),
            margin: Duration::from_secs(10),
        };
        let e = longer.execute(&reset).await.unwrap_err();
        assert!(
            e.is_vcenter_unreachable() && e.to_string().contains("needed"),
            "{e}"
        );
        assert_eq!(
            inner.0.load(Ordering::SeqCst),
            1,
            "not called when the lease is too short"
        );
        // Once the lease is gone, nothing is called at all.
        am_etcd::resign(&etcd, &lease).await;
        assert!(covered.execute(&reset).await.is_err());
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
    }
}
