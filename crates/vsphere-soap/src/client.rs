//! The client: service content, session (login, keep-alive, transparent re-login) and method calls.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, Result, SoapFault, VimFault};
use crate::secret::Credentials;
use crate::split::Splitter;
use crate::tls::TlsMode;
use crate::transport::{HttpTransport, RoundTripper, SoapRequest, TransportError, TransportErrorKind};
use crate::value::{DataObject, MoRef, Value, from_value};
use crate::xml::{self, XmlWriter};

/// The managers and root objects of a vCenter (`ServiceContent`), the ones this client uses.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServiceContent {
    /// The root folder of the inventory.
    pub root_folder: MoRef,
    /// The default property collector.
    pub property_collector: MoRef,
    /// The view manager (container views).
    pub view_manager: Option<MoRef>,
    /// Product and API version.
    pub about: AboutInfo,
    /// The session manager.
    pub session_manager: Option<MoRef>,
    /// The event manager.
    pub event_manager: Option<MoRef>,
    /// The task manager.
    pub task_manager: Option<MoRef>,
    /// The performance manager.
    pub perf_manager: Option<MoRef>,
    /// The search index.
    pub search_index: Option<MoRef>,
    /// The custom fields (custom attributes) manager.
    pub custom_fields_manager: Option<MoRef>,
}

/// Product information (`AboutInfo`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AboutInfo {
    /// e.g. `VMware vCenter Server`.
    #[serde(default)]
    pub name: String,
    /// Name, version and build.
    #[serde(default)]
    pub full_name: String,
    /// e.g. `7.0.3`.
    #[serde(default)]
    pub version: String,
    /// Build number.
    #[serde(default)]
    pub build: String,
    /// `VirtualCenter` or `HostAgent`.
    #[serde(default)]
    pub api_type: String,
    /// e.g. `7.0.3.0`.
    #[serde(default)]
    pub api_version: String,
    /// The vCenter's instance UUID.
    pub instance_uuid: Option<String>,
}

/// The logged-in session (`UserSession`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct UserSession {
    /// The session key.
    pub key: String,
    /// The user.
    pub user_name: String,
    /// The user's full name.
    #[serde(default)]
    pub full_name: String,
    /// When the session logged in (xsd:dateTime).
    #[serde(default)]
    pub login_time: String,
}

/// Settings for a [`Client`]; [`ClientBuilder::connect`] makes one.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    tls: TlsMode,
    credentials: Option<Credentials>,
    timeout: Duration,
    connect_timeout: Duration,
    keep_alive: Option<Duration>,
    api_version: String,
    transport: Option<Arc<dyn RoundTripper>>,
    max_body: usize,
}

impl ClientBuilder {
    /// Settings for the vCenter at `url`: `https://host`, `https://host/sdk`, or just `host`.
    pub fn new(url: &str) -> Self {
        let mut url = url.trim().trim_end_matches('/').to_string();
        if !url.contains("://") {
            url = format!("https://{url}");
        }
        let after_scheme = url.split_once("://").map_or("", |(_, r)| r);
        if !after_scheme.contains('/') {
            url.push_str("/sdk");
        }
        Self {
            url,
            tls: TlsMode::default(),
            credentials: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(300)),
            api_version: "7.0".into(),
            transport: None,
            max_body: crate::transport::DEFAULT_MAX_BODY,
        }
    }

    /// The SDK URL that will be used.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How to verify the server certificate (default: system trust store).
    pub fn tls(mut self, tls: TlsMode) -> Self {
        self.tls = tls;
        self
    }

    /// Log in with these credentials on connect, and again whenever the session is lost.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Timeout for ordinary calls (default 60 s). Long polls add their own wait to it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// TCP connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Check the session this often and log in again if it has expired (default 5 min; `None`: never).
    pub fn keep_alive(mut self, every: Option<Duration>) -> Self {
        self.keep_alive = every;
        self
    }

    /// The vim25 version sent in `SOAPAction` (default `7.0`).
    pub fn api_version(mut self, version: &str) -> Self {
        self.api_version = version.into();
        self
    }

    /// Refuse response bodies over `bytes` (default 64 MiB) with a `TooLarge` transport error.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Use this transport instead of HTTPS (tests, decorators).
    pub fn transport(mut self, transport: Arc<dyn RoundTripper>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Connect: fetch the service content and log in if credentials were given.
    pub async fn connect(self) -> Result<Client> {
        Client::connect(self).await
    }
}

/// A vim25 client. Cheap to clone; clones share the session.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    wire: Wire,
    timeout: Duration,
    keep_alive: Option<Duration>,
    service_content: ServiceContent,
    credentials: Option<Credentials>,
    /// Serialises logins; holds the session generation (bumped at every login).
    login: tokio::sync::Mutex<u64>,
    generation: std::sync::atomic::AtomicU64,
    keep_alive_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Single-object reads waiting to be merged (see `reads`).
    reads: Arc<crate::reads::Lanes>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut t) = self.keep_alive_task.lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
    }
}

fn service_instance() -> MoRef {
    MoRef::new("ServiceInstance", "ServiceInstance")
}

impl Client {
    /// Start building a client for `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    async fn connect(b: ClientBuilder) -> Result<Client> {
        let transport: Arc<dyn RoundTripper> = match b.transport {
            Some(t) => t,
            None => Arc::new(HttpTransport::with_limit(
                &b.url,
                &b.tls,
                b.connect_timeout,
                b.max_body,
            )?),
        };
        let wire = Wire {
            transport,
            action: format!("urn:vim25/{}", b.api_version),
            max_body: b.max_body,
        };
        let sc = call(
            &wire,
            b.timeout,
            "RetrieveServiceContent",
            &service_instance(),
            "",
            false,
            None,
        )
        .await?;
        let sc = sc
            .into_iter()
            .next()
            .ok_or_else(|| decode_err("RetrieveServiceContent", "no returnval"))?;
        let service_content: ServiceContent =
            from_value(&sc).map_err(|e| decode_err("RetrieveServiceContent", e.to_string()))?;
        let client = Client {
            inner: Arc::new(Inner {
                wire,
                timeout: b.timeout,
                keep_alive: b.keep_alive,
                service_content,
                credentials: b.credentials,
                login: tokio::sync::Mutex::new(0),
                generation: std::sync::atomic::AtomicU64::new(0),
                keep_alive_task: Mutex::new(None),
                reads: Arc::default(),
            }),
        };
        if client.inner.credentials.is_some() {
            client.relogin(0).await?;
            client.start_keep_alive();
        }
        Ok(client)
    }

    /// The service content fetched at connect time.
    pub fn service_content(&self) -> &ServiceContent {
        &self.inner.service_content
    }

    /// The timeout for ordinary calls.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// How many times this client has logged in. Session-scoped objects (property collectors,
    /// filters, views) created under an older generation are gone.
    pub fn session_generation(&self) -> u64 {
        self.inner.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn read_lanes(&self) -> &Arc<crate::reads::Lanes> {
        &self.inner.reads
    }

    fn session_manager(&self) -> Result<&MoRef> {
        self.inner
            .service_content
            .session_manager
            .as_ref()
            .ok_or_else(|| Error::Config("server has no SessionManager".into()))
    }

    /// Log in with `credentials` (also done by [`ClientBuilder::connect`] when it has credentials).
    pub async fn login(&self, credentials: &Credentials) -> Result<UserSession> {
        let sm = self.session_manager()?.clone();
        let mut w = XmlWriter::new();
        w.text("userName", &credentials.username)
            .text("password", credentials.password.expose());
        let res = call(
            &self.inner.wire,
            self.inner.timeout,
            "Login",
            &sm,
            &w.into_string(),
            true,
            None,
        )
        .await?;
        let v = res
            .into_iter()
            .next()
            .ok_or_else(|| decode_err("Login", "no returnval"))?;
        let session: UserSession = from_value(&v).map_err(|e| decode_err("Login", e.to_string()))?;
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(user = %session.user_name, "logged in to vCenter");
        Ok(session)
    }

    /// Log in again unless another caller already did since `seen_generation`.
    async fn relogin(&self, seen_generation: u64) -> Result<()> {
        let Some(creds) = self.inner.credentials.as_ref() else {
            return Err(Error::Config(
                "session lost and no credentials to log in again".into(),
            ));
        };
        let mut guard = self.inner.login.lock().await;
        if self.session_generation() != seen_generation {
            return Ok(());
        }
        self.login(creds).await?;
        *guard = self.session_generation();
        Ok(())
    }

    /// Log out and stop the keep-alive. Later calls fail with `NotAuthenticated` unless they log in again.
    pub async fn logout(&self) -> Result<()> {
        if let Ok(mut t) = self.inner.keep_alive_task.lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
        let sm = self.session_manager()?.clone();
        call(
            &self.inner.wire,
            self.inner.timeout,
            "Logout",
            &sm,
            "",
            false,
            None,
        )
        .await?;
        Ok(())
    }

    /// The current session, or `None` if the session is not authenticated.
    pub async fn current_session(&self) -> Result<Option<UserSession>> {
        let sm = self.session_manager()?.clone();
        let v = self.retrieve_property_raw(&sm, "currentSession").await?;
        match v {
            Some(v) => Ok(Some(
                from_value(&v).map_err(|e| decode_err("currentSession", e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    /// The server's clock (`CurrentTime`), as sent (xsd:dateTime).
    pub async fn current_time(&self) -> Result<String> {
        let v = self.invoke("CurrentTime", &service_instance(), |_| {}).await?;
        single_text("CurrentTime", v)
    }

    fn start_keep_alive(&self) {
        let Some(every) = self.inner.keep_alive else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = handle.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let client = Client { inner };
                let generation = client.session_generation();
                match client.current_session().await {
                    Ok(Some(_)) => tracing::debug!("vCenter session alive"),
                    Ok(None) => {
                        tracing::warn!("vCenter session expired; logging in again");
                        if let Err(e) = client.relogin(generation).await {
                            tracing::warn!(error = %e, "re-login failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "keep-alive failed"),
                }
            }
        });
        if let Ok(mut t) = self.inner.keep_alive_task.lock() {
            *t = Some(task);
        }
    }

    /// Call any vim25 method: `args` writes the arguments after `_this`, in WSDL order.
    ///
    /// Returns the `returnval` elements (none for void methods). After `NotAuthenticated`, logs in
    /// again (once, shared by concurrent callers) and retries the call.
    pub async fn invoke(
        &self,
        method: &str,
        this: &MoRef,
        args: impl FnOnce(&mut XmlWriter),
    ) -> Result<Vec<Value>> {
        self.invoke_timeout(method, this, self.inner.timeout, args).await
    }

    /// [`Client::invoke`] with an explicit response timeout.
    pub async fn invoke_timeout(
        &self,
        method: &str,
        this: &MoRef,
        timeout: Duration,
        args: impl FnOnce(&mut XmlWriter),
    ) -> Result<Vec<Value>> {
        self.invoke_each(method, this, timeout, args, None).await
    }

    /// [`Client::invoke_timeout`] handing every element at `path` (local names under
    /// `<method>Response`, e.g. `returnval`, `filterSet`, `objectSet`) to `each` as it arrives,
    /// decoded on its own: the response is never held whole (see [`crate::split`]). The
    /// `returnval`s come back without those elements; an error of `each` stops the read.
    pub async fn invoke_split(
        &self,
        method: &str,
        this: &MoRef,
        timeout: Duration,
        args: impl FnOnce(&mut XmlWriter),
        path: &[&str],
        each: &mut Each<'_>,
    ) -> Result<Vec<Value>> {
        self.invoke_each(method, this, timeout, args, Some((path, each)))
            .await
    }

    async fn invoke_each(
        &self,
        method: &str,
        this: &MoRef,
        timeout: Duration,
        args: impl FnOnce(&mut XmlWriter),
        mut each: Option<(&[&str], &mut Each<'_>)>,
    ) -> Result<Vec<Value>> {
        let mut w = XmlWriter::new();
        args(&mut w);
        let args = w.into_string();
        let generation = self.session_generation();
        let wire = &self.inner.wire;
        let first = call(
            wire,
            timeout,
            method,
            this,
            &args,
            false,
            each.as_mut().map(|(p, f)| (*p, &mut **f)),
        )
        .await;
        match first {
            // A fault carries no split elements: nothing was handed on twice.
            Err(e) if e.is_not_authenticated() && self.inner.credentials.is_some() => {
                tracing::info!(method, "session not authenticated; logging in again");
                self.relogin(generation).await?;
                call(
                    wire,
                    timeout,
                    method,
                    this,
                    &args,
                    false,
                    each.as_mut().map(|(p, f)| (*p, &mut **f)),
                )
                .await
            }
            other => other,
        }
    }

    /// One property of one object, `None` when unset.
    pub(crate) async fn retrieve_property_raw(&self, obj: &MoRef, path: &str) -> Result<Option<Value>> {
        Ok(self.retrieve_object(obj, &[path]).await?.take(path))
    }
}

pub(crate) fn decode_err(method: &str, reason: impl Into<String>) -> Error {
    Error::Decode {
        method: method.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn single_text(method: &str, v: Vec<Value>) -> Result<String> {
    match v.into_iter().next() {
        Some(Value::Text(s)) => Ok(s),
        _ => Err(decode_err(method, "expected a text returnval")),
    }
}

pub(crate) fn single_moref(method: &str, v: Vec<Value>) -> Result<MoRef> {
    match v.into_iter().next() {
        Some(Value::MoRef(r)) => Ok(r),
        _ => Err(decode_err(method, "expected a managed object reference")),
    }
}

/// Where calls go: the transport, the `SOAPAction`, the limit of a response (of each element
/// and the rest, when split).
#[derive(Debug)]
struct Wire {
    transport: Arc<dyn RoundTripper>,
    action: String,
    max_body: usize,
}

/// What [`Client::invoke_split`] hands each element to.
pub type Each<'a> = dyn FnMut(Value) -> Result<()> + Send + 'a;

/// One round trip: encode, send, decode the envelope into returnvals or a fault; with `each`,
/// the elements at its path under the response go to it as they arrive.
async fn call(
    wire: &Wire,
    timeout: Duration,
    method: &str,
    this: &MoRef,
    args: &str,
    new_session: bool,
    each: Option<(&[&str], &mut Each<'_>)>,
) -> Result<Vec<Value>> {
    let req = SoapRequest {
        method: method.to_string(),
        action: wire.action.clone(),
        body: xml::envelope(method, this, args),
        timeout,
        new_session,
    };
    tracing::trace!(method, this = %this, "vim25 call");
    let transport_err = |source: TransportError| {
        if source.kind == TransportErrorKind::Timeout {
            tracing::debug!(method, "vim25 call timed out");
        }
        Error::Transport {
            method: method.to_string(),
            source,
        }
    };
    let res = match each {
        None => wire.transport.round_trip(req).await.map_err(transport_err)?,
        Some((inner, each)) => {
            let response = format!("{method}Response");
            let mut path = vec!["Envelope", "Body", response.as_str()];
            path.extend_from_slice(inner);
            let mut failed: Option<Error> = None;
            let mut sink = |bytes: &[u8]| {
                let decoded = xml::parse(bytes)
                    .map_err(|source| Error::Xml {
                        method: method.to_string(),
                        source,
                    })
                    .and_then(|doc| each(doc.root));
                decoded.map_err(|e| failed = Some(e)).is_ok()
            };
            let mut split = Splitter::new(&path, wire.max_body, &mut sink);
            let res = wire.transport.round_trip_split(req, &mut split).await;
            drop(split);
            if let Some(e) = failed {
                return Err(e);
            }
            res.map_err(transport_err)?
        }
    };
    decode_response(method, res.status, &res.body)
}

/// Decode a response envelope: the `returnval`s, or the SOAP/vim fault as an error.
pub fn decode_response(method: &str, status: u16, body: &[u8]) -> Result<Vec<Value>> {
    let doc = match xml::parse(body) {
        Ok(doc) => doc,
        Err(source) => {
            if status != 200 {
                return Err(http_error(method, status, body));
            }
            return Err(Error::Xml {
                method: method.to_string(),
                source,
            });
        }
    };
    if doc.root_name != "Envelope" {
        if status != 200 {
            return Err(http_error(method, status, body));
        }
        return Err(decode_err(
            method,
            format!("root element is {}, not Envelope", doc.root_name),
        ));
    }
    let Value::Data(mut envelope) = doc.root else {
        return Err(decode_err(method, "empty Envelope"));
    };
    let Some(Value::Data(mut body_obj)) = envelope.take("Body") else {
        return Err(decode_err(method, "no Body"));
    };
    if let Some(fault) = body_obj.take("Fault") {
        return Err(Error::Fault {
            method: method.to_string(),
            fault: Box::new(soap_fault(fault, body)),
        });
    }
    let Some((name, resp)) = body_obj.fields.into_iter().next() else {
        return Err(decode_err(method, "empty Body"));
    };
    if status != 200 {
        return Err(http_error(method, status, body));
    }
    if name != format!("{method}Response") {
        return Err(decode_err(method, format!("got {name}")));
    }
    match resp {
        Value::Data(DataObject { fields, .. }) => Ok(fields
            .into_iter()
            .filter(|(k, _)| k == "returnval")
            .map(|(_, v)| v)
            .collect()),
        Value::Text(t) if t.trim().is_empty() => Ok(Vec::new()),
        _ => Err(decode_err(method, "unexpected response content")),
    }
}

fn http_error(method: &str, status: u16, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Error::Http {
        method: method.to_string(),
        status,
        body_start: text,
    }
}

fn soap_fault(fault: Value, raw: &[u8]) -> SoapFault {
    let code = fault
        .field("faultcode")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let message = fault
        .field("faultstring")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let detail = fault
        .field("detail")
        .and_then(Value::as_data)
        .and_then(|d| d.fields.first());
    let vim = detail.map(|(elem, v)| {
        // vim25 names the element `<Type>Fault` and sets xsi:type to `Type`.
        let type_name = v
            .type_name()
            .map(str::to_string)
            .unwrap_or_else(|| elem.strip_suffix("Fault").unwrap_or(elem).to_string());
        let raw_xml = xml::element_span(raw, &["Envelope", "Body", "Fault", "detail"])
            .and_then(|r| raw.get(r))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        VimFault::from_value(&type_name, v.clone(), message.clone(), raw_xml)
    });
    SoapFault { code, message, vim }
}
