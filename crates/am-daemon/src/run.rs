//! `am-daemon run`: the engine against vCenter.
//!
//! [`run`] connects to the vCenter of `cfg.vcenter` (TLS as configured, the password from its
//! secret source), builds the backends (the vCenter adapter as hypervisor, behind the retrying
//! decorator, and as inventory source; the network prober when there is anything to probe; tokio's
//! clock; the journal; the log alarm sink) and runs the engine until `shutdown` completes. The
//! manager's user name, which its own power operations carry in vCenter's events, is the session's
//! user as vCenter reports it (e.g. `VSPHERE.LOCAL\svc-am` for `svc-am@vsphere.local`).

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
    /// Settings of the vCenter adapter (scope, spares, hooks, what to probe, priorities).
    pub vsphere: am_vsphere::Options,
    /// A journal to use instead of the configured one.
    pub journal: Option<Box<dyn Journal>>,
    /// More alarm sinks (the log sink is always there).
    pub sinks: Vec<Box<dyn AlarmSink>>,
    /// A prober to use instead of the network prober.
    pub prober: Option<Arc<dyn Prober>>,
}

/// Runs the daemon against the vCenter of `cfg` until `shutdown` completes.
pub async fn run(cfg: DaemonConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with(cfg, RunExtras::default(), shutdown).await
}

/// [`run`] with adapter settings, journal, sinks or prober of the caller's.
pub async fn run_with(
    cfg: DaemonConfig,
    extras: RunExtras,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let vc = cfg.vcenter.clone().ok_or(RunError::NoVcenter)?;
    let password = vc.password.read("vcenter.password")?;
    let settings = ConnectSettings::new(
        &vc.url,
        &vc.user,
        Password::new(password.expose()),
        tls_mode(&vc)?,
    );
    let (client, session) = am_vsphere::connect(&settings).await?;
    let about = &client.service_content().about;
    tracing::info!(
        url = %vc.url,
        user = %session.user_name,
        server = %about.full_name,
        "connected to vCenter"
    );
    let clock = Arc::new(probe::TokioClock::new());
    let backend = VsphereBackend::new(client.clone(), extras.vsphere.clone(), clock.clone())
        .await
        .map_err(|source| RunError::Setup {
            url: vc.url.clone(),
            source,
        })?;

    let mut supervisor = cfg.supervisor.clone();
    if supervisor.manager_user != session.user_name {
        tracing::info!(
            configured = %supervisor.manager_user,
            session = %session.user_name,
            "the manager's user is the vCenter session's"
        );
        supervisor.manager_user = session.user_name.clone();
    }
    let engine_cfg = EngineConfig {
        supervisor,
        probe: cfg.probe.clone(),
        isolation_addresses: cfg.isolation_addresses.clone(),
        ..EngineConfig::default()
    };
    let prober = match extras.prober {
        Some(p) => p,
        None if probes_anything(&cfg, &extras.vsphere) => Arc::new(probe::NetProber::new(None)),
        None => Arc::new(NoProbes),
    };
    let (journal, restore) = match extras.journal {
        Some(j) => (j, None),
        None => open_journal(&cfg)?,
    };
    let mut sinks: Vec<Box<dyn AlarmSink>> = vec![Box::new(LogSink)];
    if cfg.alarms.vcenter_events {
        sinks.push(Box::new(VcenterEventSink {
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
    let backends = Backends {
        hypervisor: Arc::new(executor::Retrying::new(Arc::new(backend.clone()))),
        source: Arc::new(backend),
        prober,
        clock,
        journal,
        sinks,
    };
    let policy = engine_cfg.supervisor.placement.clone();
    let mut engine = Engine::start(engine_cfg, backends);
    if let Some(restore) = restore {
        tracing::info!(
            next_action = restore.next_action_id,
            unfinished = restore.unfinished.len(),
            "restored from the journal"
        );
        engine.restore(restore)?;
    }

    // The HTTP API, fed by the engine after every step; both stop on the same signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let board = am_api::Board::with_options(am_api::BoardOptions {
        policy,
        ..am_api::BoardOptions::default()
    });
    let exec = engine.executor().clone();
    let observed = board.clone();
    engine.set_observer(Box::new(move |now, out, sup| {
        observed.observe(now, out, sup, Some(&exec.status()));
    }));
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
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(am_api::serve(listener, board, token, async move {
        let _ = api_stop.wait_for(|s| *s).await.is_ok();
    }));
    let result = engine
        .run_until(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    if tokio::time::timeout(Duration::from_secs(6), api).await.is_err() {
        tracing::debug!("HTTP API did not stop in time");
    }
    drop(stop_rx);
    if tokio::time::timeout(Duration::from_secs(5), client.logout())
        .await
        .is_err()
    {
        tracing::debug!("vCenter logout timed out");
    }
    result.map_err(RunError::from)
}

/// The journal hook: an in-memory journal for now.
///
/// TODO(am-store): open `am_store::SqliteJournal` at `cfg.journal` here (falling back to memory
/// only when no file is configured) and hand what it recovers to `Engine::restore` before the
/// first inventory.
/// Alarms posted to vCenter as events, on the VM or host concerned (so they show in its Monitor
/// tab), in the background; a failure is logged.
struct VcenterEventSink {
    client: am_vsphere::vsphere_soap::Client,
}

impl AlarmSink for VcenterEventSink {
    fn deliver(&mut self, change: &am_core::AlarmChange) {
        let event = posted_event(change);
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.post_event(&event).await {
                tracing::warn!(error = %e, "cannot post the alarm to vCenter as an event");
            }
        });
    }
}

/// The vCenter event for an alarm change.
fn posted_event(change: &am_core::AlarmChange) -> am_vsphere::vsphere_soap::PostedEvent {
    use am_core::{AlarmChange, Severity, Subject};
    use am_vsphere::vsphere_soap::{MoRef, PostedEvent, PostedEventKind};
    let (kind, message, subject) = match change {
        AlarmChange::Raise(a) => {
            let kind = match a.severity {
                Severity::Critical => PostedEventKind::Error,
                Severity::Warning => PostedEventKind::Warning,
                Severity::Info => PostedEventKind::Info,
            };
            (kind, format!("Availability Manager: {}", a.message), &a.subject)
        }
        AlarmChange::Clear { kind, subject, .. } => (
            PostedEventKind::Info,
            format!("Availability Manager: {kind:?} cleared for {subject}"),
            subject,
        ),
    };
    let moref = |kind: &str, id: &str| {
        (
            MoRef {
                kind: kind.into(),
                value: id.into(),
            },
            id.to_owned(),
        )
    };
    let (vm, host) = match subject {
        Subject::Vm(v) => (Some(moref("VirtualMachine", v.as_str())), None),
        Subject::Host(h) => (None, Some(moref("HostSystem", h.as_str()))),
        Subject::Cluster | Subject::Manager => (None, None),
    };
    PostedEvent {
        kind,
        message,
        vm,
        host,
    }
}

/// Audit rows kept by the periodic prune.
const JOURNAL_KEEP_AUDIT: usize = 200_000;
/// Finished intents kept by the periodic prune.
const JOURNAL_KEEP_INTENTS: usize = 20_000;

/// The journal: SQLite at `cfg.journal` (what it recovers is restored into the supervisor), or in
/// memory (with a warning: decisions are then not kept across restarts).
fn open_journal(cfg: &DaemonConfig) -> Result<(Box<dyn Journal>, Option<supervisor::Restore>), RunError> {
    match &cfg.journal {
        Some(path) => {
            let journal = crate::journal::SqliteJournal::open(path)?;
            let restore = crate::journal::restore_of(&journal.recover()?);
            Ok((Box::new(journal), Some(restore)))
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

/// Whether anything will ever be probed (else no ICMP socket is opened).
fn probes_anything(cfg: &DaemonConfig, opts: &am_vsphere::Options) -> bool {
    !cfg.isolation_addresses.is_empty()
        || opts.probe_guests
        || opts.probe_host_names
        || !opts.host_addresses.is_empty()
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

#[cfg(test)]
mod event_tests {
    use super::posted_event;
    use am_core::{Alarm, AlarmChange, AlarmKind, Severity, Subject, Time};
    use am_vsphere::vsphere_soap::PostedEventKind;

    #[test]
    fn alarms_become_vcenter_events_on_the_vm_or_host_concerned() {
        let raise = AlarmChange::Raise(Alarm {
            kind: AlarmKind::VmPoweredOff,
            subject: Subject::Vm("vm-42".into()),
            severity: Severity::Warning,
            message: "VM powered off by alice; not failed over".into(),
            at: Time::from_secs(3),
        });
        let e = posted_event(&raise);
        assert_eq!(e.kind, PostedEventKind::Warning);
        assert_eq!(
            e.vm.as_ref().map(|(m, _)| (m.kind.as_str(), m.value.as_str())),
            Some(("VirtualMachine", "vm-42"))
        );
        assert!(e.message.contains("powered off by alice"));
        let clear = AlarmChange::Clear {
            kind: AlarmKind::HostIsolated,
            subject: Subject::Host("host-9".into()),
            at: Time::ZERO,
        };
        let e = posted_event(&clear);
        assert_eq!(e.kind, PostedEventKind::Info);
        assert_eq!(e.host.as_ref().map(|(m, _)| m.value.as_str()), Some("host-9"));
        assert!(e.vm.is_none());
    }
}
