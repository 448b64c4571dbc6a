//! # am-testbed
//!
//! The one launcher and control client of the vcsim test bed (`testbed/vcsim`, govmomi's vCenter
//! simulator with fault injection and a liveness model, see `testbed/README.md`), used by every
//! test that talks to it and by `cargo xtask` (which builds it). Standard library and
//! `serde_json` only; the control client is plain blocking HTTP/1.1 on loopback. [`EtcdServer`]
//! runs a one-member etcd on loopback (Debian's `etcd-server`) for the manager's HA tests. [`Sushy`] runs
//! sushy-tools' `sushy-emulator` (Python, from PyPI: `cargo xtask sushy install`) as a program.
//!
//! ```no_run
//! use am_testbed::{Spec, Vcsim};
//!
//! let sim = Vcsim::start(&Spec { hosts: 3, vms_per_host: 2, ..Spec::default() });
//! sim.post("/host/partition?name=DC0_C0_H1");
//! let truth = sim.truth();
//! assert!(truth["hosts"]["DC0_C0_H1"]["partitioned"].as_bool().unwrap_or(false));
//! ```
//!
//! Out-of-band control of the hosts, two ways (see `testbed/README.md`):
//!
//! - [`Sushy`]: sushy-tools' Redfish emulator (fake driver), one system per host, whose power
//!   notifications reach the test bed's `/bmc/notify`: a ForceOff through Redfish powers the host
//!   off, an On brings it back.
//! - An admin test bed ([`Spec::nested_of`]): a second am-vcsim whose VMs are the managed test
//!   bed's hosts (nested ESXi); powering such a VM off powers the host off, powering it on,
//!   resetting it or reverting it to its `clean` snapshot revives the host.
//!
//! ```no_run
//! use am_testbed::{Spec, Sushy, Vcsim};
//! use std::time::Duration;
//!
//! let managed = Vcsim::start(&Spec::default());
//! let bmc = Sushy::start(&managed.sushy_spec());
//! bmc.force("DC0_C0_H0", "ForceOff");
//! bmc.wait_power("DC0_C0_H0", "Off", Duration::from_secs(30));
//! assert!(!managed.host_alive("DC0_C0_H0"));
//!
//! let admin = Vcsim::start(&Spec {
//!     vms_per_host: 0,
//!     nested_of: Some(managed.control.clone()),
//!     nested_hosts: managed.host_names(),
//!     ..Spec::default()
//! });
//! admin.post("/vm/power-off?name=DC0_C0_H1&user=ops"); // PowerOffVM_Task through its SDK
//! assert!(!managed.host_alive("DC0_C0_H1"));
//! admin.post("/vm/revert?name=DC0_C0_H1&snapshot=clean"); // RevertToSnapshot_Task
//! assert!(managed.host_alive("DC0_C0_H1"));
//! ```

// Test support: a failed expectation here is a failed test, said loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

mod etcd;
mod sushy;
pub use etcd::{EtcdServer, EtcdTls, etcd_binary, signal};
pub use sushy::{SUSHY_REQUIREMENT, Sushy, SushySpec, find_sushy, install_sushy, sushy_binary, sushy_venv};

/// The workspace root: the nearest directory above this crate that holds the test bed.
pub fn workspace_root() -> PathBuf {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .expect("manifest dir");
    start
        .ancestors()
        .find(|d| d.join("testbed/vcsim/main.go").is_file())
        .map(Path::to_path_buf)
        .expect("a workspace root holding testbed/vcsim")
}

/// The newest modification time of the test bed's Go sources.
fn sources_mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "go"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

/// Builds the test bed into `out` with Go (GOPATH mode on Debian's govmomi); `Err` says why.
pub fn build(root: &Path, out: &Path) -> Result<(), String> {
    let gopath = std::env::var("AM_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(root.join("testbed/vcsim"))
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .status()
        .map_err(|e| format!("running go (install golang-go and golang-github-vmware-govmomi-dev): {e}"))?;
    if !status.success() {
        return Err("go build of testbed/vcsim failed".into());
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

static BUILD: Mutex<()> = Mutex::new(());

/// The am-vcsim binary: `$AM_VCSIM_BIN`, or `target/vcsim/am-vcsim` built with Go when missing or
/// older than its sources. Go's build cache makes rebuilds cheap.
pub fn vcsim_binary() -> PathBuf {
    if let Ok(p) = std::env::var("AM_VCSIM_BIN") {
        return PathBuf::from(p);
    }
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let out = root.join("target/vcsim/am-vcsim");
    let fresh = match (
        std::fs::metadata(&out).and_then(|m| m.modified()),
        sources_mtime(&root.join("testbed/vcsim")),
    ) {
        (Ok(b), Some(s)) => b >= s,
        _ => false,
    };
    if !fresh {
        build(&root, &out).unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Clusters in the one datacenter.
    pub clusters: u32,
    /// Hosts per cluster.
    pub hosts: u32,
    /// VMs per host (placed at random in the cluster).
    pub vms_per_host: u32,
    /// HTTPS with a CA of its own (else plain HTTP).
    pub tls: bool,
    /// A fixed SDK address (to restart it there), else a free port.
    pub listen: Option<String>,
    /// Guests listen on this TCP port while they run (0: no listeners).
    pub guest_port: u16,
    /// Hosts listen on this TCP port while their management network is up (0: none).
    pub mgmt_port: u16,
    /// The VMs' datastore is an NFS export, mountable on added hosts.
    pub nfs: bool,
    /// Local datastores, each mounted by every host (`-datastores`; the VMs' files are on the
    /// first).
    pub datastores: u32,
    /// Placement seed.
    pub seed: u64,
    /// Makes this an admin test bed of nested hosts (`-nested-of`): the managed test bed's
    /// control endpoint ([`Vcsim::control`]); with [`Spec::nested_hosts`].
    pub nested_of: Option<String>,
    /// With `nested_of` (`-nested-hosts`): the managed hosts' names; one powered-on VM each, named
    /// alike, with a snapshot `clean`.
    pub nested_hosts: Vec<String>,
    /// Puts this many VMs on the host whose name sorts first (`-pack`): an evacuation's source.
    pub pack: u32,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            clusters: 1,
            hosts: 3,
            vms_per_host: 2,
            tls: true,
            listen: None,
            guest_port: 0,
            mgmt_port: 0,
            nfs: false,
            datastores: 1,
            seed: 1,
            nested_of: None,
            nested_hosts: Vec::new(),
            pack: 0,
        }
    }
}

/// A free loopback TCP port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running am-vcsim; killed on drop.
pub struct Vcsim {
    child: Child,
    /// The SDK URL.
    pub url: String,
    /// The control endpoint (`http://127.0.0.1:PORT`).
    pub control: String,
    /// The server certificate's SHA-256 thumbprint (with TLS).
    pub thumbprint: Option<String>,
    /// The CA that signed it (with TLS).
    pub ca_file: Option<PathBuf>,
    /// What was started.
    pub spec: Spec,
}

impl Vcsim {
    /// Starts one (building it first if needed) and waits until it is ready.
    pub fn start(spec: &Spec) -> Vcsim {
        let mut cmd = Command::new(vcsim_binary());
        cmd.args([
            "-clusters",
            &spec.clusters.to_string(),
            "-hosts",
            &spec.hosts.to_string(),
            "-vms-per-host",
            &spec.vms_per_host.to_string(),
            "-seed",
            &spec.seed.to_string(),
            "-exit-on-stdin-eof",
            &format!("-tls={}", spec.tls),
            &format!("-guest-port={}", spec.guest_port),
            &format!("-mgmt-port={}", spec.mgmt_port),
            &format!("-nfs={}", spec.nfs),
            &format!("-pack={}", spec.pack),
            &format!("-datastores={}", spec.datastores),
        ]);
        if let Some(l) = &spec.listen {
            cmd.args(["-listen", l]);
        }
        if let Some(of) = &spec.nested_of {
            assert!(
                !spec.nested_hosts.is_empty(),
                "Spec::nested_of needs Spec::nested_hosts"
            );
            cmd.args(["-nested-of", of, "-nested-hosts", &spec.nested_hosts.join(",")]);
        }
        if std::env::var_os("AM_VCSIM_VERBOSE").is_some() {
            cmd.arg("-verbose");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting am-vcsim");
        let stdout = child.stdout.take().unwrap();
        let (mut url, mut control, mut thumbprint, mut ca) = (None, None, None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading am-vcsim output");
            if line == "VCSIM_READY" {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = Some(v.to_owned());
                match k {
                    "VCSIM_URL" => url = v,
                    "VCSIM_CONTROL" => control = v,
                    "VCSIM_THUMBPRINT" => thumbprint = v,
                    "VCSIM_CA" => ca = v,
                    _ => {}
                }
            }
        }
        Vcsim {
            child,
            url: url.expect("VCSIM_URL (did am-vcsim start?)"),
            control: control.expect("VCSIM_CONTROL"),
            thumbprint,
            ca_file: ca.map(PathBuf::from),
            spec: spec.clone(),
        }
    }

    /// The `host:port` the SDK listens on.
    pub fn listen_addr(&self) -> String {
        let after = self.url.split_once("://").map_or("", |(_, r)| r);
        after.split('/').next().unwrap_or_default().to_owned()
    }

    /// One request to the control endpoint: its status and JSON body.
    pub fn request(&self, method: &str, path_and_query: &str) -> (u16, serde_json::Value) {
        let host = self.control.trim_start_matches("http://");
        let (status, body) =
            http(host, method, path_and_query).unwrap_or_else(|e| panic!("control {path_and_query}: {e}"));
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, json)
    }

    /// POST to the control endpoint; a failure fails the test.
    pub fn post(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = self.request("POST", path_and_query);
        assert!(
            (200..300).contains(&status),
            "control POST {path_and_query}: {status} {body}"
        );
        body
    }

    /// GET from the control endpoint; a failure fails the test.
    pub fn get(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = self.request("GET", path_and_query);
        assert!(
            (200..300).contains(&status),
            "control GET {path_and_query}: {status} {body}"
        );
        body
    }

    /// The liveness truth (`GET /truth`): what runs where, whatever vCenter says.
    pub fn truth(&self) -> serde_json::Value {
        self.get("/truth")
    }

    /// `.vmx` path -> the hosts (names) the VM really runs on.
    pub fn running(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let t = self.truth();
        t["vms"]
            .as_object()
            .map(|vms| {
                vms.iter()
                    .map(|(vmx, v)| {
                        let hosts = v["running_on"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|r| r["host"].as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        (vmx.clone(), hosts)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `.vmx` path -> how many times vCenter lists it (registrations).
    pub fn registrations(&self) -> std::collections::BTreeMap<String, usize> {
        let t = self.truth();
        t["vms"]
            .as_object()
            .map(|vms| {
                vms.iter()
                    .map(|(vmx, v)| (vmx.clone(), v["registrations"].as_array().map_or(0, Vec::len)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hosts and their VMs as the test bed sees them (`GET /inventory`).
    pub fn inventory(&self) -> serde_json::Value {
        self.get("/inventory")
    }

    /// The names of its hosts (from `/inventory`), sorted.
    pub fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inventory()
            .as_array()
            .map(|hosts| {
                hosts
                    .iter()
                    .filter_map(|h| h["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Whether the host runs (`alive` in `/truth`); an unknown host fails the test.
    pub fn host_alive(&self, name: &str) -> bool {
        let truth = self.truth();
        truth["hosts"][name]["alive"]
            .as_bool()
            .unwrap_or_else(|| panic!("no host {name} in /truth: {}", truth["hosts"]))
    }

    /// Where a BMC emulator sends its power notifications (`/bmc/notify`).
    pub fn bmc_notify_url(&self) -> String {
        format!("{}/bmc/notify", self.control)
    }

    /// A [`SushySpec`] with one system per host of this test bed, powered on, notifying it.
    pub fn sushy_spec(&self) -> SushySpec {
        SushySpec {
            systems: self.host_names().into_iter().map(|n| (n, true)).collect(),
            notify_url: Some(self.bmc_notify_url()),
            ..SushySpec::default()
        }
    }

    /// The command line that makes this test bed do `path` from a hook (client mode).
    pub fn hook_command(&self, path_and_query: &str) -> Vec<String> {
        vec![
            vcsim_binary().display().to_string(),
            "-ctl".into(),
            self.control.clone(),
            "-post".into(),
            path_and_query.into(),
        ]
    }

    /// Kills it (vCenter going down); `Drop` does too.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTP/1.1 request with no body to `host` (`127.0.0.1:PORT`): status and body.
pub fn http(host: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    http_with(host, method, path, &[], None)
}

/// A blocking plain HTTP/1.1 request to `host` (`127.0.0.1:PORT`) with extra `headers` and a
/// `body` (content type, text): status and body.
pub fn http_with(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let (ctype, text) = body.unwrap_or(("", ""));
    if !ctype.is_empty() {
        req.push_str(&format!("Content-Type: {ctype}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{text}", text.len()));
    stream.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {head:?}"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { unchunk(body) } else { body.to_owned() }))
}

/// A chunked body, joined.
fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(unchunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), "Wikipedia");
    }
}
