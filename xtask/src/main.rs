//! `cargo xtask`: project chores that need more than cargo. Standard library only.
//!
//! - `cargo xtask test` installs what the tests need (Debian packages: Go, govmomi's source,
//!   fping, iproute2, python3-venv, when run as root; sushy-tools from PyPI into
//!   `target/sushy-venv` when missing), builds the vcsim test bed, and runs every test of the
//!   workspace, with `--features am-daemon/etcd` (manager HA; Debian's protobuf-compiler and
//!   etcd-server are installed for it). This is the README's test command, and what `.ci/run`
//!   ends with.
//! - `cargo xtask sushy install` installs sushy-tools (the Redfish emulator of the
//!   out-of-band tests) into `target/sushy-venv` when missing and prints its `sushy-emulator`.
//! - `cargo xtask ci` runs `cargo fmt --check`, `cargo clippy --features am-daemon/etcd -- -D warnings`, `cargo deny check`
//!   (bans, licenses, sources), then `cargo xtask test`.
//! - `cargo xtask vcsim build` builds the vcsim test bed into `target/vcsim/am-vcsim`.
//! - `cargo xtask vcsim start [-- FLAGS]` builds and runs it (flags: `-hosts`, `-vms-per-host`, ...).
//! - `cargo xtask bench-soap [--hosts N] [--vms-per-host N] [--rounds N] [--iterations N] [--write-docs]`
//!   reads a ~2,000-VM inventory with vsphere-soap and with govmomi, side by side against one vcsim,
//!   and writes the figures to `target/bench-soap/results.md` (and to docs/benchmarks.md with
//!   `--write-docs`).
//! - `cargo xtask bench-scale [--hosts-vms 100x100 ...] [--warmup S] [--window S] [--sim-vms N]
//!   [--sim-window S] [--no-sim] [--no-vcsim | --only-sim]` runs the release `am-daemon run`
//!   against the test bed at 2,000 and 10,000 VMs (on 100 and on 1,000 hosts; backup cache on
//!   and off) and prints ready time, idle CPU, peak RSS and the backup tasks started on vCenter
//!   a minute as ratios to issue 12's goals; then `am-daemon demo` against the simulated cluster at 50,000 VMs (100 per host) in
//!   virtual time: ready, CPU per virtual second at rest, peak RSS, and a host crash's restarts
//!   issued after the verdict (`target/bench-scale/results.md`).
//! - `cargo xtask bench-evacuate [--vms N] [--targets N] [--latency-ms MS] [--per-source N]
//!   [--per-target N] [--in-flight N]` evacuates N VMs packed on one host by live migration, with a
//!   latency injected per `MigrateVM_Task`, in parallel and one at a time, and prints the makespans
//!   against the bound the limits set (`target/bench-evacuate/results.md`).
//! - `cargo xtask bench-failover [--vms N] [--targets N] [--latency-ms MS]` crashes a host running
//!   N VMs, with a latency injected per `PowerOnVM_Task`, and prints how long after the `dead`
//!   verdict every restart was issued and the makespan against the bound
//!   (`target/bench-failover/results.md`).

mod bench_evacuate;
mod bench_failover;
mod bench_scale;
mod bench_scale_sim;
mod rund;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let res = match args.as_slice() {
        ["vcsim", "build"] => build_vcsim().map(|p| println!("{}", p.display())),
        ["vcsim", "start", rest @ ..] => start_vcsim(rest),
        ["sushy", "install"] => am_testbed::install_sushy(&root()).map(|p| println!("{}", p.display())),
        ["bench-soap", rest @ ..] => bench_soap(rest),
        ["bench-scale", rest @ ..] => bench_scale::bench_scale(&root(), rest),
        ["bench-evacuate", rest @ ..] => bench_evacuate::bench_evacuate(&root(), rest),
        ["bench-failover", rest @ ..] => bench_failover::bench_failover(&root(), rest),
        ["bench-ha"] => bench_ha(),
        ["test", rest @ ..] => test(rest),
        ["ci"] => ci(),
        _ => Err(USAGE.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  cargo xtask test [-- CARGO TEST ARGS]   install what the tests need, build vcsim, run every test
  cargo xtask ci                          fmt, clippy, deny, then `cargo xtask test` (what .ci/run runs)
  cargo xtask bench-ha                    manager HA on etcd: takeover time, journal cost vs SQLite
  cargo xtask vcsim build
  cargo xtask sushy install               sushy-tools (Redfish emulator) into target/sushy-venv
  cargo xtask vcsim start [-- -hosts N -vms-per-host N -listen ADDR -control ADDR ...]
  cargo xtask bench-soap [--hosts N] [--vms-per-host N] [--rounds N] [--iterations N] [--write-docs]
  cargo xtask bench-scale [--hosts-vms HxV ...] [--warmup S] [--window S] [--sim-vms N] [--sim-window S] [--no-sim] [--no-vcsim|--only-sim]
  cargo xtask bench-evacuate [--vms N] [--targets N] [--latency-ms MS] [--per-source N] [--per-target N] [--in-flight N]
  cargo xtask bench-failover [--vms N] [--targets N] [--latency-ms MS]";

/// Debian packages the tests need: Go and govmomi's source (vcsim), fping (the probe benchmark's
/// baseline), iproute2 (network namespaces in the probe tests), python3-venv (the venv that
/// sushy-tools is installed into), protobuf-compiler (`protoc`, which etcd-client's build needs:
/// `am-daemon --features etcd`) and etcd-server (the etcd the HA tests start on loopback).
const TEST_PACKAGES: [&str; 7] = [
    "golang-go",
    "golang-github-vmware-govmomi-dev",
    "fping",
    "iproute2",
    "python3-venv",
    "protobuf-compiler",
    "etcd-server",
];

/// Every test and lint builds the optional parts too (manager HA on etcd).
const FEATURES: [&str; 2] = ["--features", "am-daemon/etcd"];

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Installs the missing test packages with apt-get when root; otherwise says what to run.
fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root_user {
        return Err(format!(
            "missing Debian packages {missing:?}: run `sudo apt-get install -y {}` first",
            missing.join(" ")
        ));
    }
    eprintln!("xtask: installing {missing:?}");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(rest: &[&str]) -> Result<()> {
    ensure_packages()?;
    let vcsim = build_vcsim()?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .args(FEATURES)
        .env("AM_VCSIM_BIN", &vcsim)
        .current_dir(root());
    // An AM_SUSHY_BIN given is used as it is; else the venv, installed when missing.
    if std::env::var_os("AM_SUSHY_BIN").is_none() {
        cmd.env("AM_SUSHY_BIN", am_testbed::install_sushy(&root())?);
    }
    if !rest.is_empty() {
        cmd.args(rest.iter().skip_while(|a| **a == "--"));
    }
    run(&mut cmd)
}

fn ci() -> Result<()> {
    let root = root();
    // Before clippy: building etcd-client needs protoc.
    ensure_packages()?;
    run(cargo().args(["fmt", "--all", "--check"]).current_dir(&root))?;
    run(cargo()
        .args(["clippy", "--workspace", "--all-targets"])
        .args(FEATURES)
        .args(["--", "-D", "warnings"])
        .current_dir(&root))?;
    let have_deny = cargo()
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_deny {
        run(cargo().args(["install", "cargo-deny", "--locked"]))?;
    }
    // Advisories need the advisory database from the network, which CI does not have.
    run(cargo()
        .args(["deny", "check", "bans", "licenses", "sources"])
        .current_dir(&root))?;
    test(&[])
}

/// `cargo xtask bench-ha`: see the module's documentation.
fn bench_ha() -> Result<()> {
    ensure_packages()?;
    let root = root();
    let vcsim = build_vcsim()?;
    run(cargo()
        .args(["test", "-p", "am-scenarios", "--test", "vcsim_e2e"])
        .args(FEATURES)
        .args([
            "ha::bench::measure_takeover_time",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("AM_VCSIM_BIN", &vcsim)
        .current_dir(&root))?;
    run(cargo()
        .args(["bench", "-p", "am-etcd", "--bench", "journal_cost"])
        .current_dir(&root))?;
    let dir = root.join("target/bench-ha");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{f}: {e}"));
    let results = format!(
        "### Takeover: leader SIGKILL to the standby's first action\n\n{}\n### Journal cost per decision\n\n{}",
        read("takeover.md")?,
        read("journal.md")?
    );
    std::fs::write(dir.join("results.md"), &results).map_err(|e| e.to_string())?;
    print!("{results}");
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn go_build(pkg_dir: &str, out_name: &str) -> Result<PathBuf> {
    let root = root();
    let out = root.join("target/vcsim").join(out_name);
    std::fs::create_dir_all(root.join("target/vcsim")).map_err(|e| e.to_string())?;
    let gopath = std::env::var("AM_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    // Go's build cache makes this cheap when nothing changed.
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(root.join(pkg_dir))
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .status()
        .map_err(|e| format!("running go (install golang-go and golang-github-vmware-govmomi-dev): {e}"))?;
    if !status.success() {
        return Err(format!("go build of {pkg_dir} failed"));
    }
    Ok(out)
}

fn build_vcsim() -> Result<PathBuf> {
    let root = root();
    let out = root.join("target/vcsim/am-vcsim");
    am_testbed::build(&root, &out)?;
    Ok(out)
}

fn start_vcsim(rest: &[&str]) -> Result<()> {
    let bin = build_vcsim()?;
    let rest: Vec<&str> = rest.iter().copied().filter(|a| *a != "--").collect();
    let status = Command::new(bin).args(rest).status().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("am-vcsim exited with {status}"))
    }
}

struct Opts {
    hosts: u32,
    vms_per_host: u32,
    rounds: u32,
    iterations: u32,
    write_docs: bool,
}

fn parse_opts(rest: &[&str]) -> Result<Opts> {
    let mut o = Opts {
        hosts: 20,
        vms_per_host: 100,
        rounds: 3,
        iterations: 5,
        write_docs: false,
    };
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u32> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match *a {
            "--hosts" => o.hosts = num(a)?,
            "--vms-per-host" => o.vms_per_host = num(a)?,
            "--rounds" => o.rounds = num(a)?,
            "--iterations" => o.iterations = num(a)?,
            "--write-docs" => o.write_docs = true,
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if o.rounds == 0 || o.iterations == 0 {
        return Err("rounds and iterations must be at least 1".into());
    }
    Ok(o)
}

/// One client's figures from one run.
#[derive(Debug, Clone)]
struct Run {
    objects: u64,
    median_ms: f64,
    min_ms: f64,
    max_rss_kb: u64,
}

fn parse_result(line: &str) -> Option<Run> {
    let rest = line.strip_prefix("RESULT ")?;
    let get = |k: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    };
    Some(Run {
        objects: get("objects")?.parse().ok()?,
        median_ms: get("median_ms")?.parse().ok()?,
        min_ms: get("min_ms")?.parse().ok()?,
        max_rss_kb: get("max_rss_kb")?.parse().ok()?,
    })
}

fn run_client(cmd: &mut Command) -> Result<Run> {
    let out = cmd.stderr(Stdio::inherit()).output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {text}"));
    }
    text.lines()
        .find_map(parse_result)
        .ok_or_else(|| format!("no RESULT line from {cmd:?}: {text}"))
}

struct Vcsim(std::process::Child);

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench_soap(rest: &[&str]) -> Result<()> {
    let o = parse_opts(rest)?;
    let root = root();
    let vcsim = build_vcsim()?;
    let gobench = go_build("testbed/govmomi-bench", "govmomi-bench")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "vsphere-soap",
            "--example",
            "inventory_bench",
        ])
        .current_dir(&root)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build of the inventory_bench example failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let rsbench = target.join("release/examples/inventory_bench");

    eprintln!(
        "starting vcsim with {} hosts x {} VMs ...",
        o.hosts, o.vms_per_host
    );
    let mut child = Command::new(&vcsim)
        .args([
            "-hosts",
            &o.hosts.to_string(),
            "-vms-per-host",
            &o.vms_per_host.to_string(),
        ])
        .args(["-exit-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let _guard = Vcsim(child);
    let (mut url, mut thumbprint) = (String::new(), String::new());
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(v) = line.strip_prefix("VCSIM_URL=") {
            url = v.into();
        } else if let Some(v) = line.strip_prefix("VCSIM_THUMBPRINT=") {
            thumbprint = v.into();
        } else if line == "VCSIM_READY" {
            break;
        }
    }
    if url.is_empty() {
        return Err("vcsim did not report its URL".into());
    }

    let iters = o.iterations.to_string();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        // Alternate which client goes first, so neither always meets a warmer server.
        let mut rs = Command::new(&rsbench);
        rs.args([url.as_str(), thumbprint.as_str(), iters.as_str()]);
        let mut go = Command::new(&gobench);
        go.args(["-url", url.as_str(), "-iterations", iters.as_str()]);
        if round % 2 == 1 {
            ours.push(run_client(&mut rs)?);
            theirs.push(run_client(&mut go)?);
        } else {
            theirs.push(run_client(&mut go)?);
            ours.push(run_client(&mut rs)?);
        }
        let (a, b) = (ours.last().ok_or("no run")?, theirs.last().ok_or("no run")?);
        eprintln!(
            "round {round}: vsphere-soap {:.1} ms {} KiB | govmomi {:.1} ms {} KiB ({} objects)",
            a.median_ms, a.max_rss_kb, b.median_ms, b.max_rss_kb, a.objects
        );
        if a.objects != b.objects {
            return Err(format!("object counts differ: {} vs {}", a.objects, b.objects));
        }
    }
    let report = report(&o, &ours, &theirs);
    let out_dir = target.join("bench-soap");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    std::fs::write(out_dir.join("results.md"), &report).map_err(|e| e.to_string())?;
    println!("{report}");
    if o.write_docs {
        write_docs_section(&root.join("docs/benchmarks.md"), &report)?;
        eprintln!("updated docs/benchmarks.md");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(o: &Opts, ours: &[Run], theirs: &[Run]) -> String {
    let t_ours = median(ours.iter().map(|r| r.median_ms).collect());
    let t_theirs = median(theirs.iter().map(|r| r.median_ms).collect());
    let min_ours = ours.iter().map(|r| r.min_ms).fold(f64::INFINITY, f64::min);
    let min_theirs = theirs.iter().map(|r| r.min_ms).fold(f64::INFINITY, f64::min);
    let rss_ours = ours.iter().map(|r| r.max_rss_kb).max().unwrap_or(0);
    let rss_theirs = theirs.iter().map(|r| r.max_rss_kb).max().unwrap_or(0);
    let objects = ours.first().map_or(0, |r| r.objects);
    let rounds = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| format!("{:.1} vs {:.1}", a.median_ms, b.median_ms))
        .collect::<Vec<_>>()
        .join(", ");
    #[allow(clippy::cast_precision_loss)]
    let rss_ratio = rss_ours as f64 / rss_theirs.max(1) as f64;
    format!(
        "Full inventory read against one vcsim ({} hosts, {} VMs: {objects} objects; hosts with 12 \
properties, VMs with 15), over HTTPS on loopback; {} rounds of {} timed reads per client, clients \
alternating, after one warm-up read each. Produced by `cargo xtask bench-soap`.\n\n\
| client | median read (ms) | fastest read (ms) | peak RSS (MiB) |\n\
| --- | ---: | ---: | ---: |\n\
| vsphere-soap (Rust) | {t_ours:.1} | {min_ours:.1} | {:.1} |\n\
| govmomi 0.24.2 (Go) | {t_theirs:.1} | {min_theirs:.1} | {:.1} |\n\n\
Time ratio vsphere-soap / govmomi: **{:.2}** (below 1 is faster). \
Peak memory ratio: **{rss_ratio:.2}**.\n\n\
Per-round medians (ms, vsphere-soap vs govmomi): {rounds}.\n{NOTES}",
        o.hosts,
        o.vms_per_host * o.hosts,
        o.rounds,
        o.iterations,
        rss_ours as f64 / 1024.0,
        rss_theirs as f64 / 1024.0,
        t_ours / t_theirs,
    )
}

const NOTES: &str = "
Machine: 2 cores shared with other builds, so wall times are noisy; the clients run alternately
against the same vcsim in one run, which keeps the comparison fair.

Notes on the comparison:
- Both read the same properties through a container view of the root folder in one property
  collector call: ours with `RetrievePropertiesEx` (+ `ContinueRetrievePropertiesEx` when paged),
  govmomi 0.24.2's `property.Collector.RetrieveProperties`, then `mo.LoadObjectContent` into
  `[]mo.VirtualMachine` / `[]mo.HostSystem`. Ours decodes into `ObjectContent` with typed `Value`s.
- Each read includes vcsim's own time to collect and encode the objects (the same for both).
- TLS: ours pins the server's SHA-256 thumbprint, govmomi skips verification (`insecure`).
- Peak RSS is each process's `VmHWM` (ours: single-threaded tokio runtime; Go: default GC).
- Re-run: `cargo xtask bench-soap --write-docs` (options `--hosts`, `--vms-per-host`, `--rounds`,
  `--iterations`); figures also land in `target/bench-soap/results.md`.
";

const SECTION: &str = "## vSphere SOAP client";

/// Replace (or append) only the `## vSphere SOAP client` section of docs/benchmarks.md.
fn write_docs_section(path: &Path, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{SECTION}\n\n{body}");
    let new = match old.find(SECTION) {
        Some(start) => {
            let after = start + SECTION.len();
            let end = old[after..].find("\n## ").map_or(old.len(), |i| after + i + 1);
            format!(
                "{}{}{}",
                &old[..start],
                section,
                if end < old.len() {
                    format!("\n{}", &old[end..])
                } else {
                    String::new()
                }
            )
        }
        None => format!("{}\n{}", old.trim_end_matches('\n').to_string() + "\n", section),
    };
    std::fs::write(path, new).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let r = parse_result("RESULT client=x objects=7 median_ms=1.5 min_ms=1.0 max_rss_kb=99").unwrap();
        assert_eq!((r.objects, r.max_rss_kb), (7, 99));
        assert!(parse_result("nope").is_none());
    }

    #[test]
    fn docs_section_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("xtask-docs-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# B\n\n## Other\n\nkeep\n\n## vSphere SOAP client\n\nold\n\n## Last\n\nkeep too\n",
        )
        .unwrap();
        write_docs_section(&dir, "new\n").unwrap();
        let s = std::fs::read_to_string(&dir).unwrap();
        assert_eq!(
            s,
            "# B\n\n## Other\n\nkeep\n\n## vSphere SOAP client\n\nnew\n\n## Last\n\nkeep too\n"
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
