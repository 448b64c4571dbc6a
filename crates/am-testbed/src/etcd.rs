//! A one-member etcd on loopback for tests: Debian's `etcd` (package `etcd-server`, which
//! `cargo xtask test` installs), free ports, a data directory of its own; killed and removed on
//! drop. A missing binary fails the test that wanted it, saying what to install.

use crate::{free_port, http};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the etcd server binary is: `AM_ETCD_BIN`, else Debian's `/usr/bin/etcd`.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("AM_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to process `pid` with `kill(1)`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("running kill(1)");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// The PEM files of an etcd started with TLS: a CA, the member's certificate, a client's.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The CA that signed both.
    pub ca: PathBuf,
    /// The client certificate (CN `am`).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl EtcdTls {
    /// Makes a CA, a certificate for 127.0.0.1 and a client certificate in `dir`, with openssl.
    fn make(dir: &std::path::Path) -> EtcdTls {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let key = ["-newkey", "rsa:2048", "-nodes", "-days", "1"];
        openssl(
            dir,
            &[
                &["req", "-x509"],
                &key[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=am-test-ca"],
            ]
            .concat(),
        );
        for (name, cn) in [("server", "/CN=127.0.0.1"), ("client", "/CN=am")] {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    cn,
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    &format!("{name}.pem"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        EtcdTls {
            ca: dir.join("ca.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// A running etcd member; killed (and its data removed) on drop.
pub struct EtcdServer {
    /// With [`EtcdServer::start_tls`]: its certificates (clients must present one).
    pub tls: Option<EtcdTls>,
    child: Option<Child>,
    /// The client URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its data directory.
    pub dir: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts a member on free loopback ports and waits (up to 30 s) until it answers `/health`.
    pub fn start() -> EtcdServer {
        EtcdServer::start_with(false)
    }

    /// Starts a member that speaks only TLS and asks clients for a certificate of its CA.
    pub fn start_tls() -> EtcdServer {
        EtcdServer::start_with(true)
    }

    fn start_with(tls: bool) -> EtcdServer {
        let bin = etcd_binary();
        assert!(
            bin.is_file(),
            "etcd not found at {}: install Debian's etcd-server (apt-get install etcd-server; \
             `cargo xtask test` installs it) or point AM_ETCD_BIN at an etcd binary",
            bin.display()
        );
        let name = format!("am-test-{}-{}", std::process::id(), free_port());
        let dir = std::env::temp_dir().join(format!("{name}.etcd"));
        let _ = std::fs::remove_dir_all(&dir);
        let tls = tls.then(|| EtcdTls::make(&std::env::temp_dir().join(format!("{name}.tls"))));
        let mut server = EtcdServer {
            tls,
            child: None,
            url: String::new(),
            dir,
            name,
            client_port: free_port(),
            peer_port: free_port(),
        };
        let scheme = if server.tls.is_some() { "https" } else { "http" };
        server.url = format!("{scheme}://127.0.0.1:{}", server.client_port);
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(etcd_binary());
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args([
                "--name",
                &self.name,
                "--data-dir",
                &self.dir.to_string_lossy(),
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("{}={peer}", self.name),
                "--log-level",
                "error",
                "--logger",
                "zap",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("AM_ETCD_VERBOSE").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", etcd_binary().display()));
        self.child = Some(child);
        let host = format!("127.0.0.1:{}", self.client_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.tls.is_none() {
                if let Ok((200, body)) = http(&host, "GET", "/health")
                    && body.contains("true")
                {
                    return;
                }
            } else if std::net::TcpStream::connect(&host).is_ok() {
                // No plain-HTTP health over TLS: listening, then a moment to elect itself.
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("etcd exited at start: {status} (set AM_ETCD_VERBOSE=1 to see its log)");
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {} never became healthy",
                self.url
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of the member.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Freezes the member (SIGSTOP): clients' requests hang, as when it is cut off.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Lets a paused member go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Stops the member (its data is kept: [`EtcdServer::restart`] brings it back).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a stopped member again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A paused member does not die of SIGKILL until continued on some kernels' views.
            let _ = Command::new("kill")
                .args(["-s", "CONT", &c.id().to_string()])
                .status();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(t) = &self.tls
            && let Some(d) = t.ca.parent()
        {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
