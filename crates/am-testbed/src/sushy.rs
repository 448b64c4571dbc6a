//! sushy-tools' Redfish emulator (PyPI `sushy-tools` 2.x) with its fake driver: one Redfish
//! system per host of a test bed, whose power changes reach the test bed's `/bmc/notify` (the
//! driver's external notifier), so a ForceOff through Redfish powers the host off.
//!
//! The fake driver applies a power change lazily: a `ComputerSystem.Reset` stores it as pending
//! with an apply time 1 to 11 s later, and the first read of the system after that time applies
//! it (and notifies). Nothing happens until something reads the system: [`Sushy::wait_power`]
//! polls it.
//!
//! With TLS the emulator serves HTTPS only, which a std-only client cannot speak; a second
//! instance on plain HTTP shares its state (the same config and state directory, so the same
//! systems), and the helpers here ([`Sushy::request`], [`Sushy::force`], ...) go through it
//! ([`Sushy::plain_url`]). The product's client talks to [`Sushy::url`] with [`Sushy::ca_file`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{free_port, http_with, vcsim_binary, workspace_root};

/// The sushy-tools versions the test bed is written against (pip requirement).
pub const SUSHY_REQUIREMENT: &str = "sushy-tools>=2,<3";

const INSTALL_HINT: &str = "install it with `cargo xtask sushy install` (a venv in target/sushy-venv: \
`python3 -m venv target/sushy-venv && target/sushy-venv/bin/pip install 'sushy-tools>=2,<3'`), \
or put sushy-emulator on PATH, or set AM_SUSHY_BIN";

/// The venv `cargo xtask` installs sushy-tools into: `target/sushy-venv` of the workspace.
pub fn sushy_venv(root: &Path) -> PathBuf {
    root.join("target/sushy-venv")
}

/// The sushy-emulator program: `$AM_SUSHY_BIN`, else `target/sushy-venv/bin/sushy-emulator`, else
/// `sushy-emulator` on PATH; `Err` says how to install it.
pub fn find_sushy() -> Result<PathBuf, String> {
    find_sushy_in(
        std::env::var_os("AM_SUSHY_BIN"),
        &workspace_root(),
        std::env::var_os("PATH"),
    )
}

fn find_sushy_in(
    env_bin: Option<std::ffi::OsString>,
    root: &Path,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    if let Some(p) = env_bin {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "AM_SUSHY_BIN={} is not a file: {INSTALL_HINT}",
                p.display()
            ))
        };
    }
    let venv = sushy_venv(root).join("bin/sushy-emulator");
    if venv.is_file() {
        return Ok(venv);
    }
    path.and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("sushy-emulator"))
            .find(|p| p.is_file())
    })
    .ok_or_else(|| format!("sushy-emulator not found: {INSTALL_HINT}"))
}

/// [`find_sushy`], or a panic that says how to install it (tests fail, never skip).
pub fn sushy_binary() -> PathBuf {
    find_sushy().unwrap_or_else(|e| panic!("{e}"))
}

/// Installs sushy-tools into [`sushy_venv`] when its `sushy-emulator` is missing (`python3 -m
/// venv`, then pip from the package index pip is set up with); returns the program.
pub fn install_sushy(root: &Path) -> Result<PathBuf, String> {
    let venv = sushy_venv(root);
    let bin = venv.join("bin/sushy-emulator");
    if bin.is_file() {
        return Ok(bin);
    }
    let pip = venv.join("bin/pip");
    if !pip.is_file() {
        let mut made = false;
        for python in ["python3", "/usr/bin/python3"] {
            let ok = Command::new(python)
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            if ok && pip.is_file() {
                made = true;
                break;
            }
        }
        if !made {
            return Err(format!(
                "cannot make a venv in {} (python3 -m venv; on Debian install python3-venv)",
                venv.display()
            ));
        }
    }
    eprintln!(
        "am-testbed: installing {SUSHY_REQUIREMENT} into {}",
        venv.display()
    );
    let status = Command::new(&pip)
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SUSHY_REQUIREMENT,
        ])
        .status()
        .map_err(|e| format!("running {}: {e}", pip.display()))?;
    if !status.success() || !bin.is_file() {
        return Err(format!("{} install {SUSHY_REQUIREMENT} failed", pip.display()));
    }
    Ok(bin)
}

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct SushySpec {
    /// One Redfish system per entry: the host's name (the system's `Name`, and what
    /// `/bmc/notify` looks the host up by) and whether it starts powered on.
    pub systems: Vec<(String, bool)>,
    /// Where the fake driver PUTs a system's JSON on every change (`external_notifier`), e.g.
    /// [`crate::Vcsim::bmc_notify_url`]; none: no notifications.
    pub notify_url: Option<String>,
    /// HTTP basic authentication (an htpasswd file with a bcrypt hash, `SUSHY_EMULATOR_AUTH_FILE`);
    /// `/redfish/v1/` itself stays open, as sushy has it.
    pub user_password: Option<(String, String)>,
    /// HTTPS with a certificate for 127.0.0.1/localhost signed by a CA of its own
    /// ([`Sushy::ca_file`]); a plain-HTTP twin serves the helpers.
    pub tls: bool,
    /// The BMC refuses to power off (`ForceOff`, `GracefulShutdown`: HTTP 400 with a Redfish
    /// error, `SUSHY_EMULATOR_DISABLE_POWER_OFF`): a fence that fails.
    pub disable_power_off: bool,
}

/// One sushy-emulator process, behind a `sh` that kills it when our end of its stdin closes (so
/// it dies with the test even when the test is killed).
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running sushy-emulator (fake driver); stopped on drop, its directory removed.
pub struct Sushy {
    main: Proc,
    plain: Option<Proc>,
    dir: PathBuf,
    python: PathBuf,
    auth: Option<String>,
    /// The Redfish service root's base: `https://127.0.0.1:PORT` with TLS, else `http://...`.
    pub url: String,
    /// Plain HTTP to the same systems: [`Sushy::url`] without TLS, else the plain twin (for tests'
    /// std-only helpers; the product should use `url`).
    pub plain_url: String,
    /// With TLS: the PEM of the CA that signed the server certificate (trust this).
    pub ca_file: Option<PathBuf>,
    /// With TLS: the server certificate's PEM.
    pub cert_file: Option<PathBuf>,
    /// With TLS: the server certificate's SHA-256 thumbprint (`AB:CD:...`, for pinning).
    pub thumbprint: Option<String>,
    /// Host name -> Redfish system id (a UUID, stable per name): `/redfish/v1/Systems/{id}`.
    pub systems: BTreeMap<String, String>,
    /// What was started.
    pub spec: SushySpec,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn fnv(seed: u64, s: &str) -> u64 {
    s.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A UUID (version 8: made up) from a host name, the same every run.
fn system_uuid(name: &str) -> String {
    let a = fnv(0xcbf2_9ce4_8422_2325, name);
    let b = fnv(0x6c62_272e_07bb_0142, name);
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-8{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The Python interpreter the sushy-emulator script runs with (its `#!` line), for bcrypt.
fn python_of(bin: &Path) -> PathBuf {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(bin)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let first = String::from_utf8_lossy(&head[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if let Some(rest) = first.strip_prefix("#!") {
        let mut words = rest.split_whitespace();
        if let Some(w) = words.next() {
            let w = if w.ends_with("/env") {
                words.next().unwrap_or("python3")
            } else {
                w
            };
            return PathBuf::from(w);
        }
    }
    let sibling = bin.with_file_name("python3");
    if sibling.is_file() {
        sibling
    } else {
        PathBuf::from("python3")
    }
}

/// A Python string literal (JSON's escapes are Python's).
fn py_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn host_port(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, r)| r)
}

impl Sushy {
    /// Starts sushy-emulator with the fake driver and waits until it answers; a missing
    /// sushy-emulator (see [`find_sushy`]) fails the test, saying how to install it.
    pub fn start(spec: &SushySpec) -> Sushy {
        let bin = sushy_binary();
        let python = python_of(&bin);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "am-sushy-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("state")).unwrap();

        let mut systems = BTreeMap::new();
        let mut fake = Vec::new();
        for (i, (name, on)) in spec.systems.iter().enumerate() {
            let uuid = system_uuid(name);
            assert!(
                systems.insert(name.clone(), uuid.clone()).is_none(),
                "SushySpec names {name} twice"
            );
            let mac = format!(
                "52:54:00:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            );
            fake.push(serde_json::json!({
                "uuid": uuid,
                "name": name,
                "power_state": if *on { "On" } else { "Off" },
                "external_notifier": spec.notify_url.is_some(),
                "nics": [{"mac": mac}],
            }));
        }
        let fake = serde_json::Value::Array(fake).to_string();
        let mut config = format!(
            "# Written by am-testbed for one test.\nimport json\n\
             SUSHY_EMULATOR_LISTEN_IP = \"127.0.0.1\"\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = {}\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = json.loads({})\n",
            py_str(&dir.join("state").display().to_string()),
            py_str(&fake)
        );
        if spec.disable_power_off {
            config.push_str("SUSHY_EMULATOR_DISABLE_POWER_OFF = True\n");
        }
        if let Some(url) = &spec.notify_url {
            config.push_str(&format!("EXTERNAL_NOTIFICATION_URL = {}\n", py_str(url)));
        }
        let mut auth = None;
        if let Some((user, password)) = &spec.user_password {
            assert!(
                !user.contains(':'),
                "a user name with ':' cannot log in with basic auth"
            );
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{user}:{}\n", bcrypt_hash(&python, password))).unwrap();
            config.push_str(&format!(
                "SUSHY_EMULATOR_AUTH_FILE = {}\n",
                py_str(&file.display().to_string())
            ));
            auth = Some(format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes())
            ));
        }
        let config_file = dir.join("sushy.conf");
        std::fs::write(&config_file, config).unwrap();

        let mut tls = None;
        let (mut ca_file, mut cert_file, mut thumbprint) = (None, None, None);
        if spec.tls {
            let (ca, cert, key, thumb) = make_certs(&dir.join("tls"));
            tls = Some((cert.clone(), key));
            ca_file = Some(ca);
            cert_file = Some(cert);
            thumbprint = Some(thumb);
        }

        let launch = |tls: Option<&(PathBuf, PathBuf)>, log: &str| {
            let mut last = String::new();
            for _ in 0..3 {
                let port = free_port();
                let mut p = spawn(&bin, &config_file, port, tls, &dir.join(log));
                match wait_ready(&mut p, port, tls.is_none(), &auth) {
                    Ok(()) => return (p, port),
                    Err(e) => {
                        last = format!("{e}\n{}", p.log_tail());
                        p.stop();
                    }
                }
            }
            panic!("sushy-emulator ({}) did not start: {last}", bin.display());
        };
        let (main, port) = launch(tls.as_ref(), "sushy.log");
        let scheme = if spec.tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let (plain, plain_url) = if spec.tls {
            let (p, port) = launch(None, "sushy-plain.log");
            (Some(p), format!("http://127.0.0.1:{port}"))
        } else {
            (None, url.clone())
        };
        Sushy {
            main,
            plain,
            dir,
            python,
            auth,
            url,
            plain_url,
            ca_file,
            cert_file,
            thumbprint,
            systems,
            spec: spec.clone(),
        }
    }

    /// The Redfish system id of a host's system; an unknown host fails the test.
    pub fn system_id(&self, host: &str) -> &str {
        self.systems
            .get(host)
            .unwrap_or_else(|| panic!("no Redfish system for host {host}: {:?}", self.systems.keys()))
    }

    /// `/redfish/v1/Systems/{id}` of a host's system.
    pub fn system_path(&self, host: &str) -> String {
        format!("/redfish/v1/Systems/{}", self.system_id(host))
    }

    /// The `Authorization` header value with [`SushySpec::user_password`].
    pub fn authorization(&self) -> Option<&str> {
        self.auth.as_deref()
    }

    /// The Python interpreter sushy-emulator runs with (it has `requests`: a TLS client for
    /// tests that want one).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// One request over plain HTTP ([`Sushy::plain_url`], with the credentials): status and
    /// JSON body (`Null` when empty, a string when not JSON).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.request_as(self.auth.as_deref(), method, path, body)
    }

    /// [`Sushy::request`] with the given `Authorization` header (or none).
    pub fn request_as(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut headers = vec![("Accept", "application/json")];
        if let Some(a) = authorization {
            headers.push(("Authorization", a));
        }
        let text = body.map(serde_json::Value::to_string);
        let (status, answer) = http_with(
            host_port(&self.plain_url),
            method,
            path,
            &headers,
            text.as_deref().map(|t| ("application/json", t)),
        )
        .unwrap_or_else(|e| panic!("sushy {method} {path}: {e}"));
        let json = if answer.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&answer).unwrap_or(serde_json::Value::String(answer))
        };
        (status, json)
    }

    /// `ComputerSystem.Reset` of a host's system with `reset_type` (`ForceOff`, `On`,
    /// `ForceRestart`, `GracefulShutdown`, ...); a refusal fails the test. The change is applied
    /// 1-11 s later, on a read: see [`Sushy::wait_power`].
    pub fn force(&self, host: &str, reset_type: &str) {
        let path = format!("{}/Actions/ComputerSystem.Reset", self.system_path(host));
        let (status, body) = self.request(
            "POST",
            &path,
            Some(&serde_json::json!({ "ResetType": reset_type })),
        );
        assert!(
            (200..300).contains(&status),
            "Redfish {reset_type} of {host}: {status} {body}"
        );
    }

    /// The system's `PowerState` (`On`, `Off`); this read applies a pending change that is due.
    pub fn power_state(&self, host: &str) -> String {
        let (status, body) = self.request("GET", &self.system_path(host), None);
        assert_eq!(status, 200, "Redfish GET of {host}'s system: {body}");
        body["PowerState"].as_str().unwrap_or_default().to_owned()
    }

    /// Reads the system every 200 ms until its `PowerState` is `want` (so the fake driver
    /// applies the pending change and notifies); how long it took. Past `timeout` the test fails.
    pub fn wait_power(&self, host: &str, want: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.power_state(host);
            if now == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{host}'s system is still {now:?} after {timeout:?} (waiting for {want})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The emulator's log (requests and errors), for a failing test's message.
    pub fn log(&self) -> String {
        let mut out = self.main.log_tail();
        if let Some(p) = &self.plain {
            out.push_str("\n-- plain twin --\n");
            out.push_str(&p.log_tail());
        }
        out
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        self.main.stop();
        if let Some(p) = &mut self.plain {
            p.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(bin: &Path, config: &Path, port: u16, tls: Option<&(PathBuf, PathBuf)>, log: &Path) -> Proc {
    // sh runs sushy in the background and kills it when its stdin (our pipe) closes.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#""$@" </dev/null & c=$!; cat >/dev/null; kill -9 $c 2>/dev/null; wait $c 2>/dev/null; exit 0"#)
        .arg("am-sushy")
        .arg(bin)
        .args([
            "--fake",
            "--interface",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--config",
        ])
        .arg(config);
    if let Some((cert, key)) = tls {
        cmd.arg("--ssl-certificate").arg(cert).arg("--ssl-key").arg(key);
    }
    let verbose = std::env::var_os("AM_SUSHY_VERBOSE").is_some();
    let out = |verbose: bool| {
        if verbose {
            Stdio::inherit()
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_or_else(|_| Stdio::null(), Stdio::from)
        }
    };
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(out(verbose))
        .stderr(out(verbose))
        .spawn()
        .unwrap_or_else(|e| panic!("starting sh for {}: {e}", bin.display()));
    Proc {
        child,
        log: log.to_path_buf(),
    }
}

/// Waits (up to 60 s) until the emulator listens (plain: answers `/redfish/v1/` and, with
/// credentials, a systems listing with them).
fn wait_ready(p: &mut Proc, port: u16, plain: bool, auth: &Option<String>) -> Result<(), String> {
    let host = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(format!("sushy-emulator exited ({status})"));
        }
        let ready = if plain {
            let mut headers = vec![];
            if let Some(a) = auth {
                headers.push(("Authorization", a.as_str()));
            }
            matches!(
                http_with(&host, "GET", "/redfish/v1/Systems", &headers, None),
                Ok((200, _))
            )
        } else {
            std::net::TcpStream::connect(&host).is_ok()
        };
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("sushy-emulator did not answer on {host} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A bcrypt hash of `password` (cost 4: sushy checks it on every request) made with the
/// emulator's own Python (sushy-tools depends on bcrypt).
fn bcrypt_hash(python: &Path, password: &str) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            "import bcrypt, os, sys; sys.stdout.write(bcrypt.hashpw(os.environ['AM_SUSHY_PASSWORD'].encode(), bcrypt.gensalt(rounds=4)).decode())",
        ])
        .env("AM_SUSHY_PASSWORD", password)
        .output()
        .unwrap_or_else(|e| panic!("running {} for a bcrypt hash: {e}", python.display()));
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && hash.starts_with("$2"),
        "bcrypt with {}: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    hash
}

/// A CA and a server certificate for 127.0.0.1/localhost (`am-vcsim -make-certs`): CA, cert, key
/// and the cert's SHA-256 thumbprint.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf, String) {
    let out = Command::new(vcsim_binary())
        .arg("-make-certs")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("am-vcsim -make-certs: {e}"));
    assert!(
        out.status.success(),
        "am-vcsim -make-certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("am-vcsim -make-certs printed no {k}: {text}"))
            .to_owned()
    };
    (
        PathBuf::from(get("CERT_CA")),
        PathBuf::from(get("CERT_FILE")),
        PathBuf::from(get("CERT_KEY")),
        get("CERT_THUMBPRINT"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_sushy_is_an_error_that_says_how_to_install_it() {
        let nowhere = std::env::temp_dir().join(format!("am-no-sushy-{}", std::process::id()));
        let e = find_sushy_in(Some(nowhere.clone().into_os_string()), &nowhere, None).unwrap_err();
        assert!(
            e.contains("AM_SUSHY_BIN") && e.contains("cargo xtask sushy install"),
            "{e}"
        );
        let e = find_sushy_in(None, &nowhere, Some(nowhere.clone().into_os_string())).unwrap_err();
        assert!(e.contains("not found") && e.contains("pip install"), "{e}");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"admin:password"), "YWRtaW46cGFzc3dvcmQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn system_uuids_are_stable_and_distinct() {
        let a = system_uuid("DC0_C0_H0");
        assert_eq!(a, system_uuid("DC0_C0_H0"));
        assert_ne!(a, system_uuid("DC0_C0_H1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn python_strings_are_quoted() {
        assert_eq!(py_str("a\"b\\c"), r#""a\"b\\c""#);
    }
}
