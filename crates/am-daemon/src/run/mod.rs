//! `am-daemon run`: the engine against vCenter.
//!
//! [`run`] connects to the vCenter of `cfg.vcenter` (TLS as configured, the password from its
//! secret source), builds the backends (the vCenter adapter as hypervisor, behind the retrying
//! decorator, and as inventory source; the network prober when there is anything to probe; tokio's
//! clock; the journal; the log alarm sink) and runs the engine until `shutdown` completes. The
//! manager's user name, which its own power operations carry in vCenter's events, is the session's
//! user as vCenter reports it (e.g. `VSPHERE.LOCAL\svc-am` for `svc-am@vsphere.local`).
//!
//! Rooms: [`options`] turns the configuration into the adapter's and the supervisor's settings;
//! [`oob`] builds the out-of-band controllers (`[bmc]`, `[admin_vcenter]`): they are the
//! engine's power source and take the revival and fencing of the hosts they cover; `sinks`
//! posts alarms to vCenter.

mod ha;
pub mod oob;
pub mod options;
mod sinks;

pub use ha::HaState;

use crate::alarm::{AlarmSink, LogSink};
use crate::config::{ConfigError, DaemonConfig, VcenterConfig};
use crate::engine::{Backends, Engine, EngineConfig, EngineError};
use crate::journal::{Journal, MemoryJournal};
use am_core::{ProbeResult, ProbeTarget, Prober};
use am_vsphere::vsphere_soap::{Password, Thumbprint, TlsMode};
use am_vsphere::{ConnectError, ConnectSettings, SetupError, VsphereBackend};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Why `run` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration has no `[vcenter]` section.
    #[error("no [vcenter] section in the configuration: `run` needs url, user and password")]
    NoVcenter,
    /// A setting `run` needs is missing or wrong (e.g. the password's source).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// vCenter is unreachable, refused the TLS handshake or the login (each names the URL).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The adapter could not be set up (e.g. its scope does not exist).
    #[error("vCenter at {url}: {source}")]
    Setup {
        /// The SDK URL.
        url: String,
        /// What failed.
        #[source]
        source: SetupError,
    },
    /// The engine stopped (e.g. the journal failed).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The alarm webhook could not be set up.
    #[error(transparent)]
    Alarms(#[from] crate::alarm::SinkError),
    /// The journal file could not be opened or read.
    #[error("journal: {0}")]
    Journal(#[from] am_store::StoreError),
    /// ICMP probes are asked for but the process may not send them.
    #[error(
        "ICMP probes are configured ({keys}) but cannot be sent: {reason}; grant CAP_NET_RAW (the systemd unit does: AmbientCapabilities=CAP_NET_RAW) or allow the daemon's group in net.ipv4.ping_group_range, or probe by TCP (a port in targets.hosts.port / targets.guests.port)"
    )]
    Icmp {
        /// The settings that ask for ICMP.
        keys: String,
        /// Why no ICMP socket could be opened.
        reason: String,
    },
    /// The configuration has an `[etcd]` section, and this build cannot use it.
    #[error(
        "the configuration has an [etcd] section, but this am-daemon was built without etcd support: rebuild with `cargo build --release -p am-daemon --features etcd` (needs protoc), or remove [etcd] to run alone"
    )]
    EtcdNotBuilt,
    /// etcd is unreachable, refused the login, or a request failed (each names endpoint and key).
    #[cfg(feature = "etcd")]
    #[error(transparent)]
    Etcd(#[from] am_etcd::EtcdError),
    /// This daemon led its unit and lost the lease: it stopped acting. Restarted, it stands by.
    #[error("lost the leadership of unit {unit}: {reason}; stopped acting (restart to stand by)")]
    LeadershipLost {
        /// The unit.
        unit: String,
        /// Why.
        reason: String,
    },
    /// The HTTP API could not listen, or its token could not be read.
    #[error("api on {addr}: {reason}")]
    Api {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
}

/// What [`run_with`] takes beyond the configuration (tests and embedders; `run` uses the defaults).
#[derive(Default)]
pub struct RunExtras {
    /// Settings of the vCenter adapter instead of those the configuration gives.
    pub vsphere: Option<am_vsphere::Options>,
    /// A journal to use instead of the configured one.
    pub journal: Option<Box<dyn Journal>>,
    /// More alarm sinks (the log sink is always there).
    pub sinks: Vec<Box<dyn AlarmSink>>,
    /// A prober to use instead of the network prober.
    pub prober: Option<Arc<dyn Prober>>,
    /// The unit's leadership, already won (a sharded daemon's unit): no campaign.
    #[cfg(feature = "etcd")]
    pub lease: Option<(am_etcd::Etcd, am_etcd::Lease)>,
}

/// Runs the daemon against the vCenter of `cfg` until `shutdown` completes.
pub async fn run(cfg: DaemonConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    // Sharded ([etcd] units): one engine per unit this daemon leads, each a `run_with`.
    #[cfg(feature = "etcd")]
    if cfg.etcd.as_ref().is_some_and(|e| !e.units.is_empty()) {
        return ha::run_sharded(cfg, shutdown).await;
    }
    run_with(cfg, RunExtras::default(), shutdown).await
}

/// [`run`] with adapter settings, journal, sinks or prober of the caller's.
pub async fn run_with(
    cfg: DaemonConfig,
    extras: RunExtras,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let vc = cfg.vcenter.clone().ok_or(RunError::NoVcenter)?;
    let opts = match extras.vsphere {
        Some(o) => o,
        None => options::vsphere_options(&cfg)?,
    };
    let prober: Arc<dyn Prober> = match extras.prober {
        Some(p) => p,
        None if opts.targets.any() || !cfg.isolation_addresses.is_empty() => {
            let icmp = options::icmp_wanted(&cfg, &opts);
            if !icmp.is_empty()
                && let Err(e) = probe::IcmpProber::new()
            {
                return Err(RunError::Icmp {
                    keys: icmp.join(", "),
                    reason: e.to_string(),
                });
            }
            Arc::new(probe::NetProber::new(None))
        }
        None => Arc::new(NoProbes),
    };
    let password = vc.password.read("vcenter.password")?;
    let out_of_band = oob::out_of_band(&cfg)?.map(Arc::new);

    // The HTTP API first: a standby serves its status (who leads) while it waits.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let board = am_api::Board::with_options(am_api::BoardOptions {
        capacity_model: Some(format!(
            "{}, memory overcommit {:.2}",
            cfg.capacity.memory.describe(),
            cfg.capacity.memory_overcommit
        )),
        ..am_api::BoardOptions::default()
    });
    let addr = cfg.api.listen;
    let token = match &cfg.api.token {
        Some(source) => {
            let secret = source.read("api.token")?;
            Some(am_api::Secret::new(secret.expose()).map_err(|e| RunError::Api {
                addr,
                reason: e.to_string(),
            })?)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Api {
            addr,
            reason: format!("cannot listen: {e}"),
        })?;
    tracing::info!(%addr, "HTTP API listening");
    let mut api_stop = stop_rx.clone();
    // Aborted if `run_with` returns early with an error (vCenter unreachable, ...).
    let mut api = AbortOnDrop(Some(tokio::spawn(am_api::serve(
        listener,
        board.clone(),
        token,
        async move {
            let _ = api_stop.wait_for(|s| *s).await.is_ok();
        },
    ))));
    let mut shutdown = std::pin::pin!(shutdown);
    // With [etcd]: stand by until this daemon leads its unit (or is shut down first).
    #[cfg(feature = "etcd")]
    let won = extras.lease;
    #[cfg(not(feature = "etcd"))]
    let won = None;
    let role = match ha::lead(&cfg, won, shutdown.as_mut(), &board).await {
        Ok(Some(role)) => role,
        Ok(None) => {
            let _ = stop_tx.send(true);
            if let Some(api) = api.0.take() {
                let _ = tokio::time::timeout(Duration::from_millis(500), api).await;
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if let Some(o) = out_of_band.clone() {
        // The admin vCenter's login, if any, in the background: one down at start delays nothing.
        tokio::spawn(async move { o.connect().await });
    }
    let mut settings = ConnectSettings::new(
        &vc.url,
        &vc.user,
        Password::new(password.expose()),
        tls_mode(&vc)?,
    );
    settings.timeout = vc.call_timeout;
    settings.max_response_bytes =
        usize::try_from(vc.max_response_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let (client, session) = am_vsphere::connect(&settings).await?;
    let about = &client.service_content().about;
    tracing::info!(
        url = %vc.url,
        user = %session.user_name,
        server = %about.full_name,
        "connected to vCenter"
    );
    let clock = Arc::new(probe::TokioClock::new());
    let supervisor = options::supervisor_config(&cfg, &opts, &session.user_name, out_of_band.is_some());
    let backend = VsphereBackend::new(client.clone(), opts, clock.clone())
        .await
        .map_err(|source| RunError::Setup {
            url: vc.url.clone(),
            source,
        })?;
    let engine_cfg = EngineConfig {
        supervisor,
        probe: cfg.probe.clone(),
        isolation_addresses: cfg.isolation_addresses.clone(),
        health_interval: Some(vc.health_interval),
        health_timeout: vc.health_timeout,
        power_interval: cfg.bmc.poll_interval,
        executor: executor::ExecutorConfig::default()
            .with_max_in_flight(cfg.executor.max_in_flight)
            .with_per_host(cfg.executor.per_host),
        ..EngineConfig::default()
    };
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    let (mut journal, mut restore) = match extras.journal {
        Some(j) => (j, None),
        None if cfg.etcd.is_some() => (Box::new(MemoryJournal::default()) as Box<dyn Journal>, None),
        None => open_journal(&cfg)?,
    };
    #[cfg(feature = "etcd")]
    let leading = match role {
        ha::Role::Leader(l) => {
            let l = *l;
            l.show(&board);
            restore = Some((
                crate::journal::restore_of(&l.recovered),
                l.recovered.moving.values().cloned().collect(),
            ));
            journal = Box::new(l.journal);
            Some((l.etcd, l.lease, l.margin))
        }
        ha::Role::Alone => None,
    };
    #[cfg(not(feature = "etcd"))]
    let ha::Role::Alone = role;
    if let Some((_, moving)) = &restore {
        backend.adopt(moving);
    }
    let mut sinks: Vec<Box<dyn AlarmSink>> = vec![Box::new(LogSink)];
    if cfg.alarms.vcenter_events {
        sinks.push(Box::new(sinks::VcenterEventSink {
            client: client.clone(),
        }));
    }
    if let Some(url) = &cfg.alarms.webhook_url {
        sinks.push(Box::new(crate::alarm::WebhookSink::new(
            url,
            cfg.alarms.alertmanager,
        )?));
    }
    sinks.extend(extras.sinks);
    let hypervisor: Arc<dyn am_core::Hypervisor> = match &out_of_band {
        Some(o) => Arc::new(oob::OutOfBandHypervisor::new(backend.clone(), o.clone())),
        None => Arc::new(backend.clone()),
    };
    // A leader's actions start only while the lease covers them (inside the retries: each try).
    #[cfg(feature = "etcd")]
    let hypervisor: Arc<dyn am_core::Hypervisor> = match &leading {
        Some((_, lease, margin)) => Arc::new(ha::Fenced {
            inner: hypervisor,
            lease: lease.clone(),
            margin: *margin,
        }),
        None => hypervisor,
    };
    let backends = Backends {
        hypervisor: Arc::new(executor::Retrying::new(hypervisor)),
        source: Arc::new(backend),
        prober,
        power: out_of_band.clone().map(|o| o as Arc<dyn am_core::PowerSource>),
        clock,
        journal,
        sinks,
    };
    let mut engine = Engine::start(engine_cfg, backends);
    if let Some((restore, _)) = restore {
        tracing::info!(
            next_action = restore.next_action_id,
            unfinished = restore.unfinished.len(),
            "restored from the journal"
        );
        engine.restore(restore)?;
    }

    // The HTTP API is fed by the engine after every step; both stop on the same signal.
    // Operators' requests through the API (evacuate, maintenance) go into the loop.
    board.set_operator(engine.operator());
    let exec = engine.executor().clone();
    let observed = board.clone();
    engine.set_observer(Box::new(move |now, out, sup| {
        observed.observe(now, out, sup, Some(&exec.status()));
    }));
    // Journal retention: a second connection prunes old audit rows and finished intents (never
    // unfinished intents, active alarms or user power-off marks) every ten minutes.
    if let Some(path) = cfg.journal.clone() {
        let mut prune_stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = prune_stop.wait_for(|s| *s) => return,
                }
                match crate::journal::SqliteJournal::open(&path)
                    .and_then(|mut j| j.prune(JOURNAL_KEEP_AUDIT, JOURNAL_KEEP_INTENTS))
                {
                    Ok(pruned) => tracing::debug!(?pruned, "journal pruned"),
                    Err(e) => tracing::warn!(error = %e, "journal prune failed"),
                }
            }
        });
    }
    // A leader also stops when its lease is lost.
    #[cfg(feature = "etcd")]
    let lost = {
        let lease = leading.as_ref().map(|(_, l, _)| l.clone());
        async move {
            match lease {
                Some(l) => l.lost().await,
                None => std::future::pending().await,
            }
        }
    };
    #[cfg(not(feature = "etcd"))]
    let lost = std::future::pending::<String>();
    let lost_reason: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let lost_seen = lost_reason.clone();
    let result = engine
        .run_until(async move {
            tokio::select! {
                () = shutdown => {}
                reason = lost => {
                    if let Ok(mut r) = lost_seen.lock() {
                        *r = Some(reason);
                    }
                }
            }
            let _ = stop_tx.send(true);
        })
        .await;
    let lost_reason = lost_reason.lock().ok().and_then(|r| r.clone());
    #[cfg(feature = "etcd")]
    if let Some((etcd, lease, _)) = &leading {
        if lost_reason.is_none() && result.is_ok() {
            // A clean stop hands the unit over at once.
            am_etcd::resign(etcd, lease).await;
        }
    }
    // A stop is quick even when vCenter hangs: what is in flight stays journaled as unfinished.
    if let Some(api) = api.0.take()
        && tokio::time::timeout(Duration::from_millis(500), api)
            .await
            .is_err()
    {
        tracing::debug!("HTTP API did not stop in time");
    }
    drop(stop_rx);
    if let Some(o) = &out_of_band
        && tokio::time::timeout(Duration::from_millis(500), o.stop())
            .await
            .is_err()
    {
        tracing::debug!("closing the out-of-band sessions timed out");
    }
    if tokio::time::timeout(Duration::from_millis(300), client.logout())
        .await
        .is_err()
    {
        tracing::debug!("vCenter logout timed out");
    }
    if let Some(reason) = lost_reason {
        return Err(RunError::LeadershipLost {
            unit: cfg.etcd.as_ref().map(|e| e.unit.clone()).unwrap_or_default(),
            reason,
        });
    }
    // A fenced journal write stops the engine as a journal failure: say what it was.
    #[cfg(feature = "etcd")]
    if let (Err(e), Some((_, lease, _))) = (&result, &leading)
        && lease.is_lost()
    {
        return Err(RunError::LeadershipLost {
            unit: lease.unit().to_owned(),
            reason: e.to_string(),
        });
    }
    result.map_err(RunError::from)
}

/// A task aborted when dropped (unless taken out first).
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// Audit rows kept by the periodic prune.
const JOURNAL_KEEP_AUDIT: usize = 200_000;
/// Finished intents kept by the periodic prune.
const JOURNAL_KEEP_INTENTS: usize = 20_000;

/// What a journal gives a restarted daemon: the supervisor's restore, and the VMs its unfinished
/// intents were moving (for the adapter to find them again).
type Restored = (supervisor::Restore, Vec<am_core::Vm>);

/// The journal: SQLite at `cfg.journal` (what it recovers is restored into the supervisor), or in
/// memory (with a warning: decisions are then not kept across restarts).
fn open_journal(cfg: &DaemonConfig) -> Result<(Box<dyn Journal>, Option<Restored>), RunError> {
    match &cfg.journal {
        Some(path) => {
            let journal = crate::journal::SqliteJournal::open(path)?;
            let recovered = journal.recover()?;
            let restore = crate::journal::restore_of(&recovered);
            let moving = recovered.moving.values().cloned().collect();
            Ok((Box::new(journal), Some((restore, moving))))
        }
        None => {
            tracing::warn!("no journal file configured: decisions are kept in memory, not across restarts");
            Ok((Box::new(MemoryJournal::default()), None))
        }
    }
}

/// How vCenter's certificate is checked: a pinned thumbprint, a CA file, insecure when asked for
/// by name, else the system's trust store.
fn tls_mode(vc: &VcenterConfig) -> Result<TlsMode, RunError> {
    if vc.insecure_skip_tls_verify {
        tracing::warn!(url = %vc.url, "TLS verification of vCenter is off (insecure_skip_tls_verify)");
        return Ok(TlsMode::InsecureSkipVerify);
    }
    if let Some(t) = &vc.thumbprint {
        let pin: Thumbprint = t.parse().map_err(|e| ConfigError::Invalid {
            key: "vcenter.thumbprint".into(),
            reason: format!("{e}"),
        })?;
        return Ok(TlsMode::Thumbprint(pin));
    }
    if let Some(ca) = &vc.ca_file {
        return Ok(TlsMode::CaFile(ca.clone()));
    }
    Ok(TlsMode::SystemRoots)
}

/// The prober when nothing is to be probed.
struct NoProbes;

// `Prober` is an `async_trait`; this is its expansion, without a dependency on the macro.
impl Prober for NoProbes {
    fn probe<'a, 'b, 'f>(
        &'a self,
        target: &'b ProbeTarget,
        _timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = ProbeResult> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        let result = ProbeResult::Error(format!("probing is off; {} was not probed", target.address()));
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;

    fn vcenter(url: &str) -> VcenterConfig {
        VcenterConfig {
            url: url.into(),
            user: "svc-am@vsphere.local".into(),
            password: SecretSource {
                env: Some("AM_RUN_TEST_SURELY_UNSET".into()),
                file: None,
            },
            ..VcenterConfig::default()
        }
    }

    #[test]
    fn tls_follows_the_configuration() {
        let mut vc = vcenter("https://vc/sdk");
        assert_eq!(tls_mode(&vc).unwrap(), TlsMode::SystemRoots);
        vc.ca_file = Some("/etc/am/ca.pem".into());
        assert_eq!(tls_mode(&vc).unwrap(), TlsMode::CaFile("/etc/am/ca.pem".into()));
        vc.thumbprint = Some("AB:".repeat(31) + "AB");
        assert!(matches!(tls_mode(&vc).unwrap(), TlsMode::Thumbprint(_)));
        vc.thumbprint = Some("nope".into());
        let e = tls_mode(&vc).unwrap_err().to_string();
        assert!(e.contains("vcenter.thumbprint"), "{e}");
        let mut vc = vcenter("https://vc/sdk");
        vc.insecure_skip_tls_verify = true;
        assert_eq!(tls_mode(&vc).unwrap(), TlsMode::InsecureSkipVerify);
    }

    #[tokio::test]
    async fn missing_settings_are_named() {
        let never = std::future::pending::<()>();
        let e = run(DaemonConfig::default(), never).await.unwrap_err();
        assert!(matches!(e, RunError::NoVcenter), "{e}");
        let cfg = DaemonConfig {
            vcenter: Some(vcenter("https://vc.invalid/sdk")),
            ..DaemonConfig::default()
        };
        let e = run(cfg, std::future::pending::<()>())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("vcenter.password"), "{e}");
    }

    /// A build without the `etcd` feature refuses `[etcd]`, naming the feature; with it, an
    /// unreachable etcd is named.
    #[tokio::test]
    async fn an_etcd_section_needs_the_feature_and_a_reachable_etcd() {
        let dir = std::env::temp_dir().join(format!("am-run-etcd-pw-{}", std::process::id()));
        std::fs::write(&dir, "secret\n").unwrap();
        let mut vc = vcenter("https://127.0.0.1:9/sdk");
        vc.password = SecretSource {
            env: None,
            file: Some(dir.clone()),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = DaemonConfig {
            vcenter: Some(vc),
            api: crate::config::ApiConfig {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                token: None,
            },
            etcd: Some(crate::config::EtcdConfig {
                endpoints: vec![format!("http://127.0.0.1:{port}")],
                connect_timeout: Duration::from_millis(300),
                request_timeout: Duration::from_millis(300),
                ..crate::config::EtcdConfig::default()
            }),
            ..DaemonConfig::default()
        };
        let e = run(cfg, std::future::pending::<()>())
            .await
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_file(&dir);
        if cfg!(feature = "etcd") {
            assert!(
                e.contains(&format!("127.0.0.1:{port}")) && e.contains("unreachable"),
                "{e}"
            );
        } else {
            assert!(e.contains("--features etcd"), "{e}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_vcenter_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("am-run-pw-{}", std::process::id()));
        std::fs::write(&dir, "secret\n").unwrap();
        let url = format!("https://127.0.0.1:{port}/sdk");
        let mut vc = vcenter(&url);
        vc.password = SecretSource {
            env: None,
            file: Some(dir.clone()),
        };
        vc.insecure_skip_tls_verify = true;
        let cfg = DaemonConfig {
            vcenter: Some(vc),
            ..DaemonConfig::default()
        };
        let e = run(cfg, std::future::pending::<()>()).await.unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(
            matches!(e, RunError::Connect(ConnectError::Unreachable { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains(&url), "{e}");
    }
}
