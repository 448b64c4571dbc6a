//! Test support: start the vcsim test bed (building it with Go when needed) and script transports.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vsphere_soap::{RoundTripper, SoapRequest, SoapResponse, TransportError};

#[allow(unused_imports)] // not every including test uses it
pub use am_testbed::workspace_root;

/// A running am-vcsim (the workspace's one launcher, `am-testbed`), with the fields and calls
/// these tests use; killed on drop.
pub struct Vcsim {
    inner: am_testbed::Vcsim,
    pub url: String,
    pub control: String,
    pub thumbprint: String,
    pub ca_file: PathBuf,
}

impl Vcsim {
    /// Start one with `hosts` hosts in one cluster and `vms_per_host` VMs per host.
    pub fn start(hosts: u32, vms_per_host: u32) -> Vcsim {
        let inner = am_testbed::Vcsim::start(&am_testbed::Spec {
            hosts,
            vms_per_host,
            ..am_testbed::Spec::default()
        });
        Vcsim {
            url: inner.url.clone(),
            control: inner.control.clone(),
            thumbprint: inner.thumbprint.clone().expect("VCSIM_THUMBPRINT"),
            ca_file: inner.ca_file.clone().expect("VCSIM_CA"),
            inner,
        }
    }

    /// POST to the control endpoint, e.g. `ctl("/vm/heartbeat?name=x&status=red")`.
    pub async fn ctl(&self, path_and_query: &str) -> serde_json::Value {
        self.inner.post(path_and_query)
    }

    /// GET from the control endpoint, e.g. `get("/calls")`.
    pub fn get(&self, path_and_query: &str) -> serde_json::Value {
        self.inner.get(path_and_query)
    }

    /// POST to the control endpoint from blocking code.
    pub fn post(&self, path_and_query: &str) -> serde_json::Value {
        self.inner.post(path_and_query)
    }

    /// A client logged in to it (TLS verified against its CA).
    pub async fn connect(&self) -> vsphere_soap::Client {
        vsphere_soap::Client::builder(&self.url)
            .tls(vsphere_soap::TlsMode::CaFile(self.ca_file.clone()))
            .credentials(vsphere_soap::Credentials::new(
                "ha-user",
                vsphere_soap::Password::new("secret"),
            ))
            .connect()
            .await
            .expect("connect")
    }

    /// The inventory as the test bed sees it: hosts with their VMs.
    pub async fn inventory(&self) -> serde_json::Value {
        self.inner.inventory()
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
