//! Test support: start the vcsim test bed (building it with Go when needed) and script transports.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use vsphere_soap::{RoundTripper, SoapRequest, SoapResponse, TransportError};

/// The workspace root: the nearest directory above the including crate that holds the vcsim
/// test bed (this module is also included by the workspace-level tests).
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

static BUILD: Mutex<()> = Mutex::new(());

/// The am-vcsim binary: `$AM_VCSIM_BIN`, or `target/vcsim/am-vcsim` built with Go when missing or
/// older than its source. Go's build cache makes rebuilds cheap.
pub fn vcsim_binary() -> PathBuf {
    if let Ok(p) = std::env::var("AM_VCSIM_BIN") {
        return PathBuf::from(p);
    }
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let src = root.join("testbed/vcsim/main.go");
    let out = root.join("target/vcsim/am-vcsim");
    let fresh = match (std::fs::metadata(&out), std::fs::metadata(&src)) {
        (Ok(b), Ok(s)) => b.modified().ok() >= s.modified().ok(),
        _ => false,
    };
    if fresh {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(root.join("testbed/vcsim"))
        .env(
            "GOPATH",
            std::env::var("AM_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into()),
        )
        .env("GO111MODULE", "off")
        .status()
        .expect("running `go build` for the vcsim test bed (is golang-go installed? or set AM_VCSIM_BIN)");
    assert!(status.success(), "go build of testbed/vcsim failed");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// A running am-vcsim; killed on drop.
pub struct Vcsim {
    child: Child,
    pub url: String,
    pub control: String,
    pub thumbprint: String,
    pub ca_file: PathBuf,
}

impl Vcsim {
    /// Start one with `hosts` hosts in one cluster and `vms_per_host` VMs per host.
    pub fn start(hosts: u32, vms_per_host: u32) -> Vcsim {
        let mut child = Command::new(vcsim_binary())
            .args([
                "-hosts",
                &hosts.to_string(),
                "-vms-per-host",
                &vms_per_host.to_string(),
                "-exit-on-stdin-eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting am-vcsim");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut control, mut thumbprint, mut ca) = (None, None, None, None);
        for line in lines.by_ref() {
            let line = line.expect("reading am-vcsim output");
            if line == "VCSIM_READY" {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = Some(v.to_string());
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
            url: url.expect("VCSIM_URL"),
            control: control.expect("VCSIM_CONTROL"),
            thumbprint: thumbprint.expect("VCSIM_THUMBPRINT"),
            ca_file: PathBuf::from(ca.expect("VCSIM_CA")),
        }
    }

    /// POST to the control endpoint, e.g. `ctl("/vm/heartbeat?name=x&status=red")`.
    pub async fn ctl(&self, path_and_query: &str) -> serde_json::Value {
        let res = reqwest::Client::new()
            .post(format!("{}{}", self.control, path_and_query))
            .send()
            .await
            .expect("control request");
        let status = res.status();
        let body: serde_json::Value =
            serde_json::from_str(&res.text().await.unwrap_or_default()).unwrap_or(serde_json::Value::Null);
        assert!(status.is_success(), "control {path_and_query}: {status} {body}");
        body
    }

    /// The inventory as the test bed sees it: hosts with their VMs.
    pub async fn inventory(&self) -> serde_json::Value {
        let text = reqwest::get(format!("{}/inventory", self.control))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A transport that answers from a script and records the requests.
#[derive(Debug, Default)]
pub struct Scripted {
    pub replies: Mutex<VecDeque<(String, Result<SoapResponse, TransportError>)>>,
    pub requests: Mutex<Vec<SoapRequest>>,
}

impl Scripted {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Expect a call of `method`, answer 200 with `body`.
    pub fn ok(&self, method: &str, body: &str) -> &Self {
        self.reply(method, 200, body)
    }

    /// Expect a call of `method`, answer `status` with `body`.
    pub fn reply(&self, method: &str, status: u16, body: &str) -> &Self {
        self.replies.lock().unwrap().push_back((
            method.into(),
            Ok(SoapResponse {
                status,
                body: body.as_bytes().to_vec(),
            }),
        ));
        self
    }

    /// Expect a call of `method`, fail it in the transport.
    pub fn fail(&self, method: &str, err: TransportError) -> &Self {
        self.replies.lock().unwrap().push_back((method.into(), Err(err)));
        self
    }

    pub fn methods(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.method.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl RoundTripper for Scripted {
    async fn round_trip(&self, req: SoapRequest) -> Result<SoapResponse, TransportError> {
        let Some((method, reply)) = self.replies.lock().unwrap().pop_front() else {
            self.requests.lock().unwrap().push(req.clone());
            return Err(TransportError::new(
                vsphere_soap::TransportErrorKind::Other,
                format!("unscripted call to {}", req.method),
            ));
        };
        assert_eq!(method, req.method, "unexpected call order");
        self.requests.lock().unwrap().push(req);
        reply
    }
}

/// A SOAP response envelope around `inner` for `method`.
pub fn response(method: &str, inner: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
            r#"<soapenv:Body><{m}Response xmlns="urn:vim25">{i}</{m}Response></soapenv:Body></soapenv:Envelope>"#
        ),
        m = method,
        i = inner
    )
}

/// A SOAP fault envelope with a vim fault of type `ty`.
pub fn fault(ty: &str, msg: &str, detail: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
            r#"<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{msg}</faultstring>"#,
            r#"<detail><{ty}Fault xmlns="urn:vim25" xsi:type="{ty}">{detail}</{ty}Fault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#
        ),
        ty = ty,
        msg = msg,
        detail = detail
    )
}

pub const SERVICE_CONTENT: &str = r#"<returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector><viewManager type="ViewManager">ViewManager</viewManager><about><name>VMware vCenter Server</name><fullName>VMware vCenter Server 7.0.0 build-1</fullName><vendor>VMware, Inc.</vendor><version>7.0.0</version><build>1</build><apiType>VirtualCenter</apiType><apiVersion>7.0</apiVersion><instanceUuid>abc</instanceUuid></about><sessionManager type="SessionManager">SessionManager</sessionManager><eventManager type="EventManager">EventManager</eventManager><taskManager type="TaskManager">TaskManager</taskManager></returnval>"#;

pub const USER_SESSION: &str = r#"<returnval><key>52d0</key><userName>ha</userName><fullName>HA</fullName><loginTime>2024-01-01T00:00:00Z</loginTime><lastActiveTime>2024-01-01T00:00:00Z</lastActiveTime><locale>en</locale><messageLocale>en</messageLocale></returnval>"#;
