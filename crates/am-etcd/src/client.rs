//! The seam between the daemon and etcd: [`Etcd`], a connected client on a runtime of its own.
//!
//! The engine's [`Journal::append`](am_core::Journal::append) is synchronous and runs on the
//! daemon's runtime; the etcd client is async. The client lives on a dedicated one-thread
//! runtime (thread `am-etcd`): [`Etcd::block`] hands it a request and waits for the answer (like
//! an `fsync` of the SQLite journal, it blocks the caller, never the etcd thread), and
//! [`Etcd::run`] awaits it from async code. The lease's keep-alive runs there too, so a busy
//! engine never starves it.

use crate::error::{EtcdError, Result, is_auth, is_unreachable};
use crate::settings::Settings;
use etcd_client::{Client, ConnectOptions};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};

/// A connected etcd client (cheap to clone).
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
    settings: Arc<Settings>,
}

struct Inner {
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
    client: Client,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another one: let its thread go in the background.
        if let Ok(mut rt) = self.runtime.lock()
            && let Some(rt) = rt.take()
        {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.settings.endpoints)
            .field("unit", &self.settings.unit)
            .finish_non_exhaustive()
    }
}

/// Maps a client error of `op` on `key` to ours: unreachable and auth failures named as such.
pub(crate) fn request_error(
    settings: &Settings,
    op: &'static str,
    key: &str,
    e: &etcd_client::Error,
) -> EtcdError {
    if is_auth(e) {
        EtcdError::Auth {
            endpoints: settings.endpoint_list(),
            user: settings.user.as_ref().map(|(u, _)| u.clone()),
            detail: e.to_string(),
        }
    } else if is_unreachable(e) {
        EtcdError::Unreachable {
            endpoints: settings.endpoint_list(),
            detail: format!("{op} on {key}: {e}"),
        }
    } else {
        EtcdError::Request {
            op,
            key: key.to_owned(),
            detail: e.to_string(),
        }
    }
}

/// The client's TLS from PEM files (each unreadable one named).
fn tls_options(tls: &crate::settings::Tls) -> Result<etcd_client::TlsOptions> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| EtcdError::Settings(format!("cannot read the {what} {}: {e}", p.display())))
    };
    let mut o = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("CA file", &tls.ca_file)?));
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        o = o.identity(etcd_client::Identity::from_pem(
            read("client certificate", cert)?,
            read("client key", key)?,
        ));
    }
    if let Some(d) = &tls.domain {
        o = o.domain_name(d.clone());
    }
    Ok(o)
}

impl Etcd {
    /// Starts the etcd thread, connects (authenticating when a user is set) and reads the
    /// cluster's status once, so that an unreachable endpoint or a refused login fails here,
    /// named, not at the first append.
    pub async fn connect(settings: Settings) -> Result<Etcd> {
        settings.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("am-etcd")
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Settings(format!("cannot start the etcd thread: {e}")))?;
        let handle = runtime.handle().clone();
        let s = settings.clone();
        let connected = handle.spawn(async move {
            let mut opts = ConnectOptions::new()
                .with_connect_timeout(s.connect_timeout)
                .with_timeout(s.request_timeout)
                .with_keep_alive(Duration::from_secs(2), s.request_timeout)
                .with_require_leader(true);
            if let Some((user, password)) = &s.user {
                opts = opts.with_user(user.clone(), password.expose().to_owned());
            }
            if let Some(tls) = &s.tls {
                opts = opts.with_tls(tls_options(tls)?);
            }
            let deadline = s.connect_timeout + s.request_timeout;
            let attempt = async {
                let mut client = Client::connect(&s.endpoints, Some(opts))
                    .await
                    .map_err(|e| request_error(&s, "connect", &s.endpoint_list(), &e))?;
                client
                    .status()
                    .await
                    .map_err(|e| request_error(&s, "status", &s.endpoint_list(), &e))?;
                // Reading the unit's prefix proves the user may (an auth-enabled etcd refuses a
                // user without a role on it).
                let prefix = format!("{}/{}/", s.prefix, s.unit);
                client
                    .get(
                        prefix.clone(),
                        Some(
                            etcd_client::GetOptions::new()
                                .with_prefix()
                                .with_keys_only()
                                .with_limit(1),
                        ),
                    )
                    .await
                    .map_err(|e| request_error(&s, "get", &prefix, &e))?;
                Ok::<_, EtcdError>(client)
            };
            match tokio::time::timeout(deadline, attempt).await {
                Ok(r) => r,
                Err(_) => Err(EtcdError::Unreachable {
                    endpoints: s.endpoint_list(),
                    detail: format!("no answer within {} ms", deadline.as_millis()),
                }),
            }
        });
        let client = match connected.await {
            Ok(r) => r,
            Err(_) => Err(EtcdError::Stopped),
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Etcd {
            inner: Arc::new(Inner {
                runtime: Mutex::new(Some(runtime)),
                handle,
                client,
            }),
            settings: Arc::new(settings),
        })
    }

    /// The settings it was connected with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The same connection (and thread) for another unit: what a daemon leading several units
    /// of a sharded deployment uses, one per unit.
    pub fn for_unit(&self, unit: &str) -> Etcd {
        let mut settings = (*self.settings).clone();
        settings.unit = unit.to_owned();
        Etcd {
            inner: self.inner.clone(),
            settings: Arc::new(settings),
        }
    }

    /// A clone of the client (cheap), to use on the etcd thread.
    pub(crate) fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// Runs `f` on the etcd thread and waits for it without blocking the caller's runtime.
    pub async fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self.inner.handle.spawn(f).await {
            Ok(r) => r,
            Err(_) => Err(EtcdError::Stopped),
        }
    }

    /// Spawns `f` on the etcd thread (the lease's keep-alive).
    pub(crate) fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.inner.handle.spawn(f));
    }

    /// Runs `f` on the etcd thread and blocks the calling thread until it answers: the seam of the
    /// synchronous journal. Never call it on the etcd thread itself.
    pub fn block<F, T>(&self, f: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        drop(self.inner.handle.spawn(async move {
            let _ = tx.send(f.await);
        }));
        // The request has its own timeout (the client's); this only guards against a lost thread.
        match rx.recv_timeout(self.settings.request_timeout * 4) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(EtcdError::Timeout {
                op: "request",
                key: self.settings.endpoint_list(),
                after_ms: u64::try_from((self.settings.request_timeout * 4).as_millis()).unwrap_or(u64::MAX),
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(EtcdError::Stopped),
        }
    }
}
