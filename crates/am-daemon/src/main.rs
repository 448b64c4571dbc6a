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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the failover plans kept ready for every host and failure domain, and the admission
    /// figures, for the demo's cluster or a scenario's.
    Plan {
        /// A scenario file whose cluster to plan (default: the built-in demo's).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Show what the failure of this host would do.
        #[arg(long)]
        fail: Option<String>,
    },
    /// Check a configuration file (and AM_* environment variables): print every problem, each
    /// naming its key. Exit status 0 when the configuration is valid.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
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

fn main() -> ExitCode {
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
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Plan { scenario, fail } => {
            let opts = demo::Options {
                scenario,
                ..demo::Options::default()
            };
            let result = demo::scenario(&opts)
                .and_then(|s| s.inventory())
                .map_err(|e| e.to_string())
                .and_then(|inv| {
                    let policy = planner::Policy::default();
                    match fail {
                        Some(host) => am_daemon::plan::render_failure(&inv, &policy, &host),
                        None => am_daemon::plan::render(&inv, &policy),
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
        Command::CheckConfig { file } => match am_daemon::config::DaemonConfig::load(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        },
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
