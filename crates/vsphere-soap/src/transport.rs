//! The transport seam: one trait with one method, like govmomi's `soap.RoundTripper`.
//!
//! [`HttpTransport`] is the real one (reqwest + rustls); tests script their own.

use std::sync::Mutex;
use std::time::Duration;

use crate::split::{SplitError, Splitter};
use crate::tls::TlsMode;

/// One SOAP request, already encoded.
#[derive(Clone)]
pub struct SoapRequest {
    /// The vim25 method name, for errors and logs.
    pub method: String,
    /// The `SOAPAction` header value, e.g. `urn:vim25/8.0`.
    pub action: String,
    /// The envelope. May contain a password (`Login`): never log it.
    pub body: String,
    /// How long to wait for the response (long for `WaitForUpdatesEx`).
    pub timeout: Duration,
    /// Forget the session cookie before sending (set for `Login`, so a re-login starts clean).
    pub new_session: bool,
}

impl std::fmt::Debug for SoapRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoapRequest")
            .field("method", &self.method)
            .field("action", &self.action)
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .field("new_session", &self.new_session)
            .finish()
    }
}

/// The HTTP answer: status and body bytes. SOAP faults come with status 500 and a fault envelope.
#[derive(Debug, Clone)]
pub struct SoapResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// What kind of transport failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Could not connect.
    Connect,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// No answer in time.
    Timeout,
    /// The response body was larger than the transport's limit (it was not read further).
    TooLarge,
    /// Anything else (body read error, protocol error, ...).
    Other,
}

/// A failure below HTTP: no response was received.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct TransportError {
    /// The kind of failure.
    pub kind: TransportErrorKind,
    /// A description (never contains request bodies).
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// A transport error without an underlying cause.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }
}

/// Sends one SOAP request and returns the HTTP response. Implementations keep the session cookie.
#[async_trait::async_trait]
pub trait RoundTripper: Send + Sync + std::fmt::Debug {
    /// Send `req`; return the response whatever its HTTP status.
    async fn round_trip(&self, req: SoapRequest) -> Result<SoapResponse, TransportError>;

    /// [`RoundTripper::round_trip`], handing the body to `split` as it arrives: the response
    /// returned is the body without the split elements. The default reads the whole body first.
    async fn round_trip_split(
        &self,
        req: SoapRequest,
        split: &mut Splitter<'_>,
    ) -> Result<SoapResponse, TransportError> {
        let res = self.round_trip(req).await?;
        split.feed(&res.body).map_err(split_error)?;
        Ok(SoapResponse {
            status: res.status,
            body: split.finish(),
        })
    }
}

/// Why a split response was not read to its end, as a transport failure.
pub fn split_error(e: SplitError) -> TransportError {
    match e {
        SplitError::TooLarge(m) => TransportError::new(TransportErrorKind::TooLarge, m),
        SplitError::Stopped => TransportError::new(TransportErrorKind::Other, "stopped by its reader"),
    }
}

const SESSION_COOKIE: &str = "vmware_soap_session";

/// The real transport: HTTPS POST to `/sdk` with reqwest, keeping the `vmware_soap_session` cookie.
pub struct HttpTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    cookie: Mutex<Option<String>>,
    max_body: usize,
}

/// The default limit of a response body: 64 MiB. A split answer ([`RoundTripper::round_trip_split`],
/// the inventory feed: some 60 MB of XML at 10,000 VMs) has it per element and on the rest.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cookie is a bearer credential: never printed.
        f.debug_struct("HttpTransport")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport to `url` (the full SDK URL, e.g. `https://vc.example.com/sdk`) that refuses
    /// response bodies over [`DEFAULT_MAX_BODY`].
    pub fn new(url: &str, tls: &TlsMode, connect_timeout: Duration) -> Result<Self, crate::Error> {
        Self::with_limit(url, tls, connect_timeout, DEFAULT_MAX_BODY)
    }

    /// [`HttpTransport::new`] refusing response bodies over `max_body` bytes.
    pub fn with_limit(
        url: &str,
        tls: &TlsMode,
        connect_timeout: Duration,
        max_body: usize,
    ) -> Result<Self, crate::Error> {
        let url =
            reqwest::Url::parse(url).map_err(|e| crate::Error::Config(format!("bad URL {url:?}: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .user_agent(concat!("vsphere-soap/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            // A peer gone without a word (a cut link, a powered-off appliance) fails a pending
            // long poll within some 30 s instead of at its timeout.
            .tcp_keepalive(Duration::from_secs(15))
            .tcp_keepalive_interval(Duration::from_secs(5))
            .tcp_keepalive_retries(3);
        match url.scheme() {
            "https" => builder = builder.use_preconfigured_tls(crate::tls::client_config(tls)?),
            "http" => {}
            other => return Err(crate::Error::Config(format!("unsupported URL scheme {other:?}"))),
        }
        let client = builder
            .build()
            .map_err(|e| crate::Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            url,
            cookie: Mutex::new(None),
            max_body,
        })
    }

    fn cookie(&self) -> Option<String> {
        self.cookie.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set_cookie(&self, value: Option<String>) {
        if let Ok(mut c) = self.cookie.lock() {
            *c = value;
        }
    }
}

impl HttpTransport {
    /// Sends `req` and keeps the session cookie of the answer; the body is still to be read.
    async fn send(&self, req: SoapRequest) -> Result<reqwest::Response, TransportError> {
        if req.new_session {
            self.set_cookie(None);
        }
        let mut rb = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", req.action)
            .timeout(req.timeout)
            .body(req.body);
        if let Some(c) = self.cookie() {
            rb = rb.header(reqwest::header::COOKIE, format!("{SESSION_COOKIE}={c}"));
        }
        let res = rb.send().await.map_err(map_reqwest)?;
        for v in res.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Some(value) = v.to_str().ok().and_then(session_cookie) {
                self.set_cookie(Some(value.to_string()));
            }
        }
        Ok(res)
    }
}

#[async_trait::async_trait]
impl RoundTripper for HttpTransport {
    async fn round_trip(&self, req: SoapRequest) -> Result<SoapResponse, TransportError> {
        let method = req.method.clone();
        let mut res = self.send(req).await?;
        let status = res.status().as_u16();
        let too_large = |n: u64| {
            TransportError::new(
                TransportErrorKind::TooLarge,
                format!(
                    "{method} response of {n} bytes or more is over the limit of {} bytes",
                    self.max_body
                ),
            )
        };
        if let Some(n) = res.content_length().filter(|n| *n > self.max_body as u64) {
            return Err(too_large(n));
        }
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(map_reqwest)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(SoapResponse { status, body })
    }

    /// Reads the body chunk by chunk into `split`: no limit on the whole, the splitter's on each
    /// element and on the rest.
    async fn round_trip_split(
        &self,
        req: SoapRequest,
        split: &mut Splitter<'_>,
    ) -> Result<SoapResponse, TransportError> {
        let mut res = self.send(req).await?;
        let status = res.status().as_u16();
        while let Some(chunk) = res.chunk().await.map_err(map_reqwest)? {
            split.feed(&chunk).map_err(split_error)?;
        }
        Ok(SoapResponse {
            status,
            body: split.finish(),
        })
    }
}

/// The value of `vmware_soap_session` in a `Set-Cookie` header.
fn session_cookie(header: &str) -> Option<&str> {
    let first = header.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    (name.trim() == SESSION_COOKIE && !value.is_empty()).then_some(value.trim())
}

fn map_reqwest(e: reqwest::Error) -> TransportError {
    let mut kind = if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else {
        TransportErrorKind::Other
    };
    // Walk the chain for TLS problems: they show up as connect errors.
    let (message, tls) = crate::tls::error_chain(&e);
    if tls {
        kind = TransportErrorKind::Tls;
    }
    TransportError {
        kind,
        message,
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_told_apart() {
        assert!(crate::tls::looks_like_tls(
            "received corrupt message of type InvalidContentType"
        ));
        assert!(crate::tls::looks_like_tls(
            "peer sent fatal alert: HandshakeFailure"
        ));
        assert!(crate::tls::looks_like_tls(
            "invalid peer certificate: UnknownIssuer"
        ));
        assert!(!crate::tls::looks_like_tls("connection refused (os error 111)"));
    }

    #[test]
    fn parses_session_cookie() {
        assert_eq!(
            session_cookie("vmware_soap_session=\"52a1\"; Path=/; HttpOnly; Secure;"),
            Some("\"52a1\"")
        );
        assert_eq!(session_cookie("other=1"), None);
    }
}
