//! The release `am-daemon run` against a test bed, for the benchmarks: built once, configured as
//! an operator would (a password file, an API token file, a journal), killed on drop.

use crate::Result;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API token of every benchmark daemon.
pub const TOKEN: &str = "bench-daemon-token-0123";

/// A benchmark's `--name N` options: the value of each given, by name (an option not in `names`,
/// a missing value or one that is not a number is refused, naming it).
pub fn numbers(
    rest: &[&str],
    names: &[&'static str],
) -> Result<std::collections::BTreeMap<&'static str, u64>> {
    let mut out = std::collections::BTreeMap::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let Some(name) = names.iter().find(|n| **n == *flag) else {
            return Err(format!("unknown option {flag} ({})", names.join(", ")));
        };
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: `{value}` is not a number"))?;
        out.insert(*name, n);
    }
    Ok(out)
}

/// `numbers`' value of `name` as a `u32`, else `default`.
pub fn small(given: &std::collections::BTreeMap<&'static str, u64>, name: &str, default: u32) -> Result<u32> {
    given.get(name).map_or(Ok(default), |n| {
        u32::try_from(*n).map_err(|_| format!("{name}: {n} is too large"))
    })
}

/// Builds the release daemon; its path.
pub fn build_release(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run(
        Command::new(&cargo)
            .args(["build", "--release", "-p", "am-daemon"])
            .current_dir(root),
    )?;
    Ok(target_dir(root).join("release/am-daemon"))
}

/// The cargo target directory.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The test bed the failover and evacuation benchmarks share: `vms` packed on one host of
/// `targets + 1`, `latency_ms` injected into every `method` call; returns it with the packed
/// host's name. `mgmt_port`: the hosts' management port (0: none).
pub fn packed_bed(
    vms: u32,
    targets: u32,
    method: &str,
    latency_ms: u64,
    mgmt_port: u16,
) -> Result<(am_testbed::Vcsim, String)> {
    let hosts = targets + 1;
    let sim = am_testbed::Vcsim::start(&am_testbed::Spec {
        hosts,
        vms_per_host: vms.div_ceil(hosts),
        pack: vms,
        mgmt_port,
        ..am_testbed::Spec::default()
    });
    sim.post(&format!("/delay?method={method}&ms={latency_ms}&count=100000"));
    let source = sim
        .host_names()
        .into_iter()
        .min()
        .ok_or("the test bed has no host")?;
    Ok((sim, source))
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// Its API (`127.0.0.1:PORT`).
    pub addr: String,
    /// Its files: `am.toml`, `journal.db`, `daemon.log`.
    pub dir: PathBuf,
    /// How long after its start it answered `/readyz` with 200.
    pub ready: Duration,
}

impl Daemon {
    /// Starts `daemon` against `sim` in a fresh `dir`, with `extra` TOML appended to the
    /// configuration (sections of its own), and waits for `/readyz`.
    pub fn start(daemon: &Path, dir: &Path, sim: &am_testbed::Vcsim, extra: &str) -> Result<Daemon> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (pw, token) = (dir.join("pw"), dir.join("token"));
        std::fs::write(&pw, "secret\n").map_err(|e| e.to_string())?;
        std::fs::write(&token, format!("{TOKEN}\n")).map_err(|e| e.to_string())?;
        let ca = sim.ca_file.as_ref().ok_or("the test bed has no CA file")?;
        let port = am_testbed::free_port();
        let text = format!(
            "journal = \"{journal}\"\n[vcenter]\nurl = \"{url}\"\nuser = \"svc-am\"\npassword = {{ file = \"{pw}\" }}\nca_file = \"{ca}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ file = \"{token}\" }}\n{extra}",
            journal = dir.join("journal.db").display(),
            url = sim.url,
            pw = pw.display(),
            token = token.display(),
            ca = ca.display(),
        );
        let config = dir.join("am.toml");
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?;
        let started = Instant::now();
        // AM_BENCH_LOG_LEVEL (e.g. debug): a diagnostic run's log, in daemon.log.
        let level = std::env::var("AM_BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
        let child = Command::new(daemon)
            .args(["--log-level", level.as_str(), "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", daemon.display()))?;
        let mut d = Daemon {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir: dir.to_owned(),
            ready: Duration::ZERO,
        };
        loop {
            if let Some(status) = d.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "am-daemon exited before it was ready ({status}); see {}",
                    d.dir.join("daemon.log").display()
                ));
            }
            if matches!(am_testbed::http(&d.addr, "GET", "/readyz"), Ok((200, _))) {
                d.ready = started.elapsed();
                return Ok(d);
            }
            if started.elapsed() > Duration::from_secs(300) {
                return Err("am-daemon not ready after 300 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A POST with the token: status and body.
    pub fn post(&self, path: &str) -> Result<(u16, String)> {
        let bearer = format!("Bearer {TOKEN}");
        am_testbed::http_with(&self.addr, "POST", path, &[("Authorization", &bearer)], None)
    }

    /// Its status, as JSON.
    pub fn status(&self) -> Result<serde_json::Value> {
        let (_, body) = am_testbed::http(&self.addr, "GET", "/api/v1/status")?;
        serde_json::from_str(&body).map_err(|e| format!("status: {e}"))
    }

    /// A host's state in its status.
    pub fn host_state(&self, name: &str) -> Result<String> {
        let status = self.status()?;
        Ok(status["hosts"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["name"] == name))
            .and_then(|h| h["state"].as_str())
            .unwrap_or_default()
            .to_owned())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
