//! `am-daemon run` in-process (`run_with`) against a test bed: its configuration written as an
//! operator would (a password file, an API token file, a journal), its API on a free port.

use crate::common::WAIT;
use am_daemon::config::{ApiConfig, DaemonConfig, SecretSource, VcenterConfig};
use am_daemon::run::{RunExtras, run_with};
use am_testbed::Vcsim;
use std::path::PathBuf;
use std::time::Duration;

/// The API token every such daemon is given.
pub const TOKEN: &str = "e2e-token-0123456789";

/// A running `am-daemon run`.
pub struct RunDaemon {
    /// Its API.
    pub url: String,
    /// Its token.
    pub token: am_api::Secret,
    /// Its files (journal, secrets).
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), am_daemon::run::RunError>>>,
}

impl RunDaemon {
    /// Starts it against `sim`, nothing probed, with `tune` applied to its configuration, and
    /// waits for `/readyz`.
    pub async fn start(sim: &Vcsim, tune: impl FnOnce(&mut DaemonConfig)) -> RunDaemon {
        let tag = format!("{}-{}", std::process::id(), am_testbed::free_port());
        let dir = std::env::temp_dir().join(format!("am-e2e-run-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (pw, token) = (dir.join("pw"), dir.join("token"));
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let port = am_testbed::free_port();
        let mut cfg = DaemonConfig {
            vcenter: Some(VcenterConfig {
                url: sim.url.clone(),
                user: "svc-am".into(),
                password: SecretSource {
                    env: None,
                    file: Some(pw),
                },
                ca_file: sim.ca_file.clone(),
                ..VcenterConfig::default()
            }),
            journal: Some(dir.join("journal.db")),
            // Nothing probed: the test bed's hosts listen on no management port here.
            targets: am_vsphere::Targets::none(),
            api: ApiConfig {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                token: Some(SecretSource {
                    env: None,
                    file: Some(token),
                }),
            },
            ..DaemonConfig::default()
        };
        tune(&mut cfg);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_with(cfg, RunExtras::default(), async {
            let _ = stopped.await;
        }));
        let d = RunDaemon {
            url: format!("http://127.0.0.1:{port}"),
            token: am_api::Secret::new(TOKEN).unwrap(),
            dir,
            stop: Some(stop),
            task: Some(task),
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !am_api::fetch_ready(&d.url).await.unwrap_or(false) {
            assert!(
                !d.task.as_ref().is_some_and(|t| t.is_finished()),
                "the daemon stopped before it was ready"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for /readyz"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        d
    }

    /// Sends an operator request with the token.
    pub async fn ask(&self, req: &am_core::OperatorRequest) {
        am_api::operator_request(&self.url, &self.token, req)
            .await
            .unwrap_or_else(|e| panic!("{req} refused: {e}"));
    }

    /// Its status.
    pub async fn status(&self) -> am_api::Snapshot {
        am_api::fetch_status(&self.url).await.expect("status")
    }

    /// Polls `check` on its status every `every` until it gives `Some`, at most [`WAIT`]; the
    /// timeout message ends with the latest audit lines.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        every: Duration,
        mut check: impl FnMut(&am_api::Snapshot) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.status().await;
            if let Some(t) = check(&status) {
                return t;
            }
            if tokio::time::Instant::now() > deadline {
                let recent: Vec<String> = status.recent.iter().map(|e| e.to_string()).collect();
                panic!("timed out waiting for {what}; recent:\n{}", recent.join("\n"));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Stops it (as SIGTERM would) and removes its files.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
