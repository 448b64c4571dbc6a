//! `am-daemon`: parses the command line, sets up logging, and calls the library.

use am_daemon::demo;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Availability Manager: keeps VMs running.
#[derive(Parser, Debug)]
#[command(name = "am-daemon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level for the daemon's own log on stderr (error, warn, info, debug).
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    /// Log format on stderr: `text`, or `json` (one object a line; an audit line's subject,
    /// transition, action and reason are its own keys).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon against vCenter until SIGINT or SIGTERM.
    Run {
        /// The configuration file (TOML; AM_* environment variables override it).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The statistics of a running daemon, in text: hosts, VMs, cluster figures.
    Stats {
        /// The daemon's API.
        #[arg(long, default_value = "http://127.0.0.1:8480")]
        url: String,
        /// Redraw every N seconds, like `top`.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
    /// A running daemon's full status as JSON.
    Status {
        /// The daemon's API.
        #[arg(long, default_value = "http://127.0.0.1:8480")]
        url: String,
    },
    /// A running daemon's active alarms.
    Alarms {
        /// The daemon's API.
        #[arg(long, default_value = "http://127.0.0.1:8480")]
        url: String,
    },
    /// Ask a running daemon to empty a host by live migration, in waves (needs the API token).
    Evacuate {
        /// The host's name or id.
        host: String,
        /// Why: maintenance or predicted-failure.
        #[arg(long, default_value = "maintenance")]
        reason: String,
        /// Put the host into maintenance mode once it is empty.
        #[arg(long)]
        enter_maintenance: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Storage maintenance: ask a running daemon to move every VM's files off a datastore by
    /// Storage vMotion, a few at a time, to datastores with room (needs the API token).
    #[command(name = "evacuate-datastore")]
    EvacuateDatastore {
        /// The datastore's id or name.
        datastore: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ask a running daemon to put an empty host into maintenance mode, or take it back.
    Maintenance {
        /// enter or exit.
        #[arg(value_parser = ["enter", "exit"])]
        what: String,
        /// The host's name or id.
        host: String,
        /// On exit: live-migrate back the VMs its evacuation moved away.
        #[arg(long)]
        return_vms: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Tell a running daemon a host is predicted to fail (by the `predicted_failure` policy it
    /// is evacuated into maintenance mode, or an alarm waits), or `--clear` that it is not.
    Degraded {
        /// The host's name or id.
        host: String,
        /// What predicts it.
        #[arg(long, default_value = "predicted failure")]
        reason: String,
        /// Withdraw the prediction.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop all automatic recovery, cluster-wide (network or vCenter maintenance): monitoring
    /// and alarms go on. Survives a restart of the daemon; `arm` resumes.
    Disarm {
        /// Why, for the alarm and the audit log.
        #[arg(long, default_value = "operator")]
        reason: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Resume automatic recovery after `disarm`.
    Arm {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the failover plans kept ready for every host and failure domain, and the admission
    /// figures, for the demo's cluster or a scenario's.
    Plan {
        /// A scenario file whose cluster to plan (default: the built-in demo's).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Show what the failure of this host would do.
        #[arg(long)]
        fail: Option<String>,
        /// Plan the cluster of a running daemon (its API) instead.
        #[arg(long)]
        url: Option<String>,
    },
    /// Check a configuration file (and AM_* environment variables): print every problem, each
    /// naming its key. Exit status 0 when the configuration is valid.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
        /// Also print every setting in effect (file and environment over the defaults), secrets
        /// shown as where they come from, never as values.
        #[arg(long)]
        effective: bool,
    },
    /// Run the real daemon loop against the built-in simulated cluster (virtual time) and report.
    Demo {
        /// A scenario file (TOML) instead of the built-in story.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Seed of the simulated cluster and the probes.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the report as JSON (no live view).
        #[arg(long)]
        json: bool,
        /// Only the report, no live view.
        #[arg(long, short)]
        quiet: bool,
    },
}

/// Where a state-changing client command goes, and its token.
#[derive(clap::Args, Debug)]
struct ApiArgs {
    /// The daemon's API.
    #[arg(long, default_value = "http://127.0.0.1:8480")]
    url: String,
    /// A file holding the API token (else the AM_API_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl ApiArgs {
    fn token(&self) -> Result<am_api::Secret, String> {
        match &self.token_file {
            Some(p) => am_api::Secret::from_file(p),
            None => am_api::Secret::from_env("AM_API_TOKEN"),
        }
        .map_err(|e| e.to_string())
    }

    async fn send(&self, req: am_core::OperatorRequest) -> Result<(), String> {
        let token = self.token()?;
        let accepted = am_api::operator_request(&self.url, &token, &req)
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        println!("accepted: {accepted} (progress: `am-daemon stats`, /api/v1/events)");
        Ok(())
    }
}

/// Completes on SIGINT or SIGTERM (graceful stop: the engine stops taking decisions; what is in
/// flight stays journaled as unfinished intents and is reconciled at the next start).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs one client command on a small runtime; errors go to stderr with exit status 2.
fn client(job: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per core), and what one
/// arena frees no other reuses: at 10,000 VMs that was 7 MB of the daemon's 61 MB peak
/// (`docs/benchmarks.md`). One arena is enough for a daemon that mostly waits, and glibc reads
/// `MALLOC_ARENA_MAX` before `main`: so the daemon executes itself once more with it set (same
/// process id, same arguments), unless it is set already (an operator's value wins), with
/// `MALLOC_MMAP_THRESHOLD_` fixed at 128 KiB unless set. If that fails it goes on as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args).env("MALLOC_ARENA_MAX", "1");
    // A fixed threshold: blocks of 128 KiB and more are mapped and unmapped on their own, not
    // left in the heap after glibc raises its threshold on the first large free (1,000 hosts:
    // 2.3 MiB of peak RSS).
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        cmd.env("MALLOC_MMAP_THRESHOLD_", "131072");
    }
    let err = cmd.exec();
    eprintln!("warning: could not start again with one malloc arena ({err}); going on with glibc's default");
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    one_malloc_arena();
    let cli = Cli::parse();
    let level = match cli.log_level.parse::<tracing::Level>() {
        Ok(level) => level,
        Err(_) => {
            eprintln!(
                "error: --log-level `{}` is not one of error, warn, info, debug, trace",
                cli.log_level
            );
            return ExitCode::from(2);
        }
    };
    match cli.log_format.as_str() {
        "text" => tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .init(),
        "json" => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .init(),
        other => {
            eprintln!("error: --log-format `{other}` is not one of text, json");
            return ExitCode::from(2);
        }
    }
    match cli.command {
        Command::Run { config } => {
            let cfg = match am_daemon::config::DaemonConfig::load(Some(&config)) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            // Two workers: the engine's step (the journal's fsync, the status snapshot) holds
            // one at most, so probes and the vCenter feed never wait behind it.
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(am_daemon::run::run(cfg, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Stats { url, watch } => client(async move {
            match watch {
                Some(secs) => {
                    let opts = am_api::WatchOptions {
                        interval: std::time::Duration::from_secs(secs.max(1)),
                        ..am_api::WatchOptions::default()
                    };
                    let mut out = std::io::stdout();
                    tokio::select! {
                        r = am_api::watch(&opts, || am_api::fetch_status(&url), &mut out) => r.map_err(|e| e.to_string()),
                        _ = tokio::signal::ctrl_c() => Ok(()),
                    }
                }
                None => am_api::fetch_status(&url)
                    .await
                    .map(|s| print!("{}", am_api::render_stats(&s, am_api::terminal_width())))
                    .map_err(|e| format!("{url}: {e}")),
            }
        }),
        Command::Status { url } => client(async move {
            let s = am_api::fetch_status(&url)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            serde_json::to_string_pretty(&s)
                .map(|j| println!("{j}"))
                .map_err(|e| e.to_string())
        }),
        Command::Alarms { url } => client(async move {
            let alarms = am_api::fetch_alarms(&url)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if alarms.is_empty() {
                println!("no active alarms");
            }
            for a in alarms {
                println!("{}", serde_json::to_string(&a).unwrap_or_default());
            }
            Ok(())
        }),
        Command::Evacuate {
            host,
            reason,
            enter_maintenance,
            api,
        } => client(async move {
            api.send(am_core::OperatorRequest::Evacuate {
                host: host.as_str().into(),
                reason,
                enter_maintenance,
            })
            .await
        }),
        Command::EvacuateDatastore { datastore, api } => client(async move {
            api.send(am_core::OperatorRequest::EvacuateDatastore {
                datastore: datastore.as_str().into(),
            })
            .await
        }),
        Command::Maintenance {
            what,
            host,
            return_vms,
            api,
        } => client(async move {
            let host = am_core::HostId::from(host.as_str());
            api.send(if what == "enter" {
                am_core::OperatorRequest::MaintenanceEnter { host }
            } else {
                am_core::OperatorRequest::MaintenanceExit { host, return_vms }
            })
            .await
        }),
        Command::Degraded {
            host,
            reason,
            clear,
            api,
        } => client(async move {
            let host = am_core::HostId::from(host.as_str());
            api.send(if clear {
                am_core::OperatorRequest::DegradedClear {
                    host,
                    source: "cli".into(),
                }
            } else {
                am_core::OperatorRequest::Degraded {
                    host,
                    reason,
                    source: "cli".into(),
                }
            })
            .await
        }),
        Command::Disarm { reason, api } => {
            client(async move { api.send(am_core::OperatorRequest::Disarm { reason }).await })
        }
        Command::Arm { api } => client(async move { api.send(am_core::OperatorRequest::Arm).await }),
        Command::Plan { scenario, fail, url } => {
            let opts = demo::Options {
                scenario,
                ..demo::Options::default()
            };
            let inventory = match url {
                Some(url) => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(am_api::fetch_status(&url))
                            .map_err(|e| format!("{url}: {e}"))
                    })
                    .map(|status| {
                        let model = status
                            .capacity_model
                            .clone()
                            .unwrap_or_else(|| "as the daemon counts it (not reported)".into());
                        (am_daemon::plan::inventory_of(&status), model)
                    }),
                None => demo::scenario(&opts)
                    .and_then(|s| s.inventory())
                    .map(|inv| (inv, "the simulator's configured sizes".to_owned()))
                    .map_err(|e| e.to_string()),
            };
            let result = inventory.and_then(|(inv, model)| {
                let policy = planner::Policy::default();
                match fail {
                    Some(host) => am_daemon::plan::render_failure(&inv, &policy, &host),
                    None => am_daemon::plan::render(&inv, &policy, &model),
                }
                .map_err(|e| e.to_string())
            });
            match result {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::CheckConfig { file, effective } => {
            match am_daemon::config::DaemonConfig::load(Some(&file)) {
                Ok(cfg) => {
                    if effective {
                        match cfg.effective() {
                            Ok(text) => print!("{text}"),
                            Err(e) => {
                                eprintln!("{}: {e}", file.display());
                                return ExitCode::from(2);
                            }
                        }
                        for line in cfg.secret_checks() {
                            println!("# {line}");
                        }
                    }
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Demo {
            scenario,
            seed,
            json,
            quiet,
        } => {
            let opts = demo::Options {
                scenario,
                seed,
                json,
                quiet,
            };
            let out: Arc<Mutex<dyn std::io::Write + Send>> = Arc::new(Mutex::new(std::io::stdout()));
            match demo::run(&opts, out) {
                Ok(summary) if summary.ok() => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
