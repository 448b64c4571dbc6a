//! A host's BMC through DMTF Redfish: the power state of its `ComputerSystem`, fencing
//! (`ComputerSystem.Reset` `ForceOff`, then reading until `Off`) and revival (`On` when off,
//! else a configurable reset type, then reading until `On`).
//!
//! TLS is checked as the vCenter client checks it (`vsphere_soap::tls::client_config`: the
//! system's roots, a CA file, a pinned SHA-256 thumbprint, insecure only by name). Credentials go
//! as HTTP basic authentication on every request, or once into a Redfish session
//! (`POST /redfish/v1/SessionService/Sessions`) whose `X-Auth-Token` is sent instead; the
//! session is deleted on [`Bmc::stop`]. A session the BMC forgot (401) is made again once.

use std::time::Duration;

use am_core::PowerReading;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::sync::Mutex;
use vsphere_soap::{Password, TlsMode};

use crate::error::{Failure, OobError};

/// How the manager logs in to a BMC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic authentication on every request (the default).
    #[default]
    Basic,
    /// A Redfish session: one login, then `X-Auth-Token`.
    Session,
}

/// One host's BMC.
#[derive(Clone, Debug)]
pub struct RedfishSettings {
    /// The host's name in vCenter (errors and logs name it).
    pub host: String,
    /// The BMC's base URL, e.g. `https://10.0.0.5` (the service root is `/redfish/v1`).
    pub url: String,
    /// The system: an id under `/redfish/v1/Systems/`, or a path (`/redfish/v1/Systems/1`);
    /// `None`: the one member of `/redfish/v1/Systems` (an error when there are several).
    pub system: Option<String>,
    /// The user.
    pub user: String,
    /// Its password (never printed).
    pub password: Password,
    /// Basic authentication or a session.
    pub auth: Auth,
    /// How the BMC's certificate is checked.
    pub tls: TlsMode,
    /// One request at most this long (connecting included).
    pub timeout: Duration,
    /// A fence or revival waits at most this long for the power state it asked for.
    pub confirm_timeout: Duration,
    /// How often the power state is read while waiting.
    pub confirm_every: Duration,
    /// The reset type that revives a host that is on (`ForceRestart`, `PowerCycle`, ...).
    pub revive_reset: String,
    /// A larger answer is refused.
    pub max_body: usize,
}

impl RedfishSettings {
    /// Settings with the defaults: basic auth, the system's trust store, 10 s per request,
    /// 60 s to confirm, reads every 500 ms, revival by `ForceRestart`, answers up to 1 MiB.
    pub fn new(host: &str, url: &str, user: &str, password: Password) -> Self {
        RedfishSettings {
            host: host.to_owned(),
            url: url.to_owned(),
            system: None,
            user: user.to_owned(),
            password,
            auth: Auth::Basic,
            tls: TlsMode::SystemRoots,
            timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(60),
            confirm_every: Duration::from_millis(500),
            revive_reset: "ForceRestart".to_owned(),
            max_body: 1 << 20,
        }
    }
}

/// A Redfish session: its token (a credential, never printed) and where to delete it.
struct Session {
    token: Password,
    location: Option<String>,
}

/// The system's path and its reset action, as the BMC describes them.
#[derive(Clone, Debug)]
struct System {
    path: String,
}

/// A client of one BMC.
pub struct Bmc {
    s: RedfishSettings,
    base: Url,
    http: reqwest::Client,
    system: Mutex<Option<System>>,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Bmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bmc")
            .field("host", &self.s.host)
            .field("url", &self.s.url)
            .field("user", &self.s.user)
            .field("auth", &self.s.auth)
            .finish_non_exhaustive()
    }
}

/// One HTTP answer.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Bmc {
    /// A client; nothing is sent yet. Errors: a bad URL, a TLS setting that cannot work.
    pub fn new(s: RedfishSettings) -> Result<Bmc, OobError> {
        let err = |failure| OobError::Redfish {
            op: "setup",
            host: s.host.clone(),
            url: s.url.clone(),
            failure: Box::new(failure),
        };
        let base = Url::parse(s.url.trim_end_matches('/'))
            .map_err(|e| err(Failure::Config(format!("not a URL: {e}"))))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("am-oob/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30));
        match base.scheme() {
            "https" => {
                let tls = vsphere_soap::tls::client_config(&s.tls)
                    .map_err(|e| err(Failure::Config(e.to_string())))?;
                builder = builder.use_preconfigured_tls(tls);
            }
            "http" => {
                tracing::warn!(host = %s.host, url = %s.url, "BMC over plain HTTP: its credentials cross the network in clear");
            }
            other => {
                return Err(err(Failure::Config(format!(
                    "unsupported URL scheme {other:?} (https or http)"
                ))));
            }
        }
        let http = builder
            .build()
            .map_err(|e| err(Failure::Config(format!("HTTP client: {e}"))))?;
        Ok(Bmc {
            s,
            base,
            http,
            system: Mutex::new(None),
            session: Mutex::new(None),
        })
    }

    /// The host it controls.
    pub fn host(&self) -> &str {
        &self.s.host
    }

    /// The BMC's URL.
    pub fn url(&self) -> &str {
        &self.s.url
    }

    fn err(&self, op: &'static str, failure: Failure) -> OobError {
        OobError::Redfish {
            op,
            host: self.s.host.clone(),
            url: self.s.url.clone(),
            failure: Box::new(failure),
        }
    }

    /// The host's power as the BMC reads it: `Off` only when `PowerState` is `Off`; `On`,
    /// `PoweringOn`, `PoweringOff` and `Paused` are on (something may still run).
    pub async fn power_state(&self) -> Result<PowerReading, OobError> {
        let state = self.read_state("power_state").await?;
        reading(&state).ok_or_else(|| {
            self.err(
                "power_state",
                Failure::Malformed(format!("unknown PowerState {state:?}")),
            )
        })
    }

    /// Fences the host: `ForceOff` (unless it is off already), then reads its power until it is
    /// `Off`. Ok only once the BMC says `Off`; a change that never shows within
    /// `confirm_timeout` is [`Failure::NotConfirmed`].
    pub async fn fence(&self) -> Result<(), OobError> {
        let op = "fence";
        let (system, body) = self.system_json(op).await?;
        if power_of(&body) == Some("Off") {
            tracing::info!(host = %self.s.host, "fence: its BMC reads it off already");
            return Ok(());
        }
        self.reset(op, &system, &body, "ForceOff").await?;
        self.confirm(op, "Off").await
    }

    /// Revives the host: `On` when it is off, else `revive_reset` (`ForceRestart` by default),
    /// then reads its power until it is `On`.
    pub async fn revive(&self) -> Result<(), OobError> {
        let op = "revive";
        let (system, body) = self.system_json(op).await?;
        let reset = if power_of(&body) == Some("Off") {
            "On"
        } else {
            self.s.revive_reset.as_str()
        };
        self.reset(op, &system, &body, reset).await?;
        self.confirm(op, "On").await
    }

    /// Deletes the Redfish session, if one was made.
    pub async fn stop(&self) {
        let session = self.session.lock().await.take();
        if let Some(Session {
            token,
            location: Some(loc),
        }) = session
        {
            let Ok(url) = self.base.join(&loc) else {
                return;
            };
            let r = self
                .http
                .delete(url)
                .header("X-Auth-Token", token.expose())
                .timeout(self.s.timeout)
                .send()
                .await;
            match r {
                Ok(a) if a.status().is_success() => {
                    tracing::debug!(host = %self.s.host, "Redfish session deleted");
                }
                Ok(a) => {
                    tracing::debug!(host = %self.s.host, status = a.status().as_u16(), "deleting the Redfish session failed");
                }
                Err(e) => {
                    tracing::debug!(host = %self.s.host, error = %e, "deleting the Redfish session failed")
                }
            }
        }
    }

    /// Reads `PowerState` every `confirm_every` until it is `want`, at most `confirm_timeout`.
    async fn confirm(&self, op: &'static str, want: &'static str) -> Result<(), OobError> {
        let deadline = tokio::time::Instant::now() + self.s.confirm_timeout;
        let mut last;
        loop {
            match self.read_state(op).await {
                Ok(state) if state == want => {
                    tracing::info!(host = %self.s.host, op, state = %state, "BMC confirms the power state");
                    return Ok(());
                }
                Ok(state) => last = state,
                Err(e) => {
                    last = format!(
                        "unreadable ({})",
                        e.failure().map(ToString::to_string).unwrap_or_default()
                    )
                }
            }
            if tokio::time::Instant::now() + self.s.confirm_every > deadline {
                return Err(self.err(
                    op,
                    Failure::NotConfirmed {
                        want,
                        last,
                        after: self.s.confirm_timeout,
                    },
                ));
            }
            tokio::time::sleep(self.s.confirm_every).await;
        }
    }

    /// `ComputerSystem.Reset` with `reset_type`, at the target the system names; a type the
    /// system lists as not allowed is refused before anything is sent.
    async fn reset(
        &self,
        op: &'static str,
        system: &str,
        body: &Value,
        reset_type: &str,
    ) -> Result<(), OobError> {
        let action = body.pointer("/Actions/#ComputerSystem.Reset");
        let target = action
            .and_then(|a| a.get("target"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("{system}/Actions/ComputerSystem.Reset"), str::to_owned);
        if let Some(allowed) = action
            .and_then(|a| a.get("ResetType@Redfish.AllowableValues"))
            .and_then(Value::as_array)
            && !allowed.iter().any(|v| v.as_str() == Some(reset_type))
        {
            let list: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            return Err(self.err(
                op,
                Failure::Config(format!(
                    "the system does not allow ResetType {reset_type} (it allows {})",
                    list.join(", ")
                )),
            ));
        }
        tracing::info!(host = %self.s.host, url = %self.s.url, reset_type, "Redfish ComputerSystem.Reset");
        let payload = serde_json::json!({ "ResetType": reset_type });
        let a = self.request(op, Method::POST, &target, Some(&payload)).await?;
        self.ok(op, &a)?;
        Ok(())
    }

    async fn read_state(&self, op: &'static str) -> Result<String, OobError> {
        let (_, body) = self.system_json(op).await?;
        power_of(&body)
            .map(str::to_owned)
            .ok_or_else(|| self.err(op, Failure::Malformed("the system has no PowerState".into())))
    }

    /// The system's path and its JSON.
    async fn system_json(&self, op: &'static str) -> Result<(String, Value), OobError> {
        let system = self.system(op).await?;
        let body = self.get(op, &system.path).await?;
        Ok((system.path, body))
    }

    /// The system's path: configured, or the one member of the systems collection.
    async fn system(&self, op: &'static str) -> Result<System, OobError> {
        if let Some(s) = self.system.lock().await.clone() {
            return Ok(s);
        }
        let path = match &self.s.system {
            Some(p) if p.starts_with('/') => p.clone(),
            Some(id) => format!("/redfish/v1/Systems/{id}"),
            None => {
                let list = self.get(op, "/redfish/v1/Systems").await?;
                let members: Vec<&str> = list
                    .get("Members")
                    .and_then(Value::as_array)
                    .map(|m| {
                        m.iter()
                            .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
                            .collect()
                    })
                    .ok_or_else(|| {
                        self.err(
                            op,
                            Failure::Malformed("/redfish/v1/Systems has no Members".into()),
                        )
                    })?;
                match members.as_slice() {
                    [one] => (*one).to_owned(),
                    many => {
                        return Err(self.err(
                            op,
                            Failure::Config(format!(
                                "the BMC has {} systems ({}): set `system` to one of them",
                                many.len(),
                                many.join(", ")
                            )),
                        ));
                    }
                }
            }
        };
        let s = System {
            path: path.trim_end_matches('/').to_owned(),
        };
        *self.system.lock().await = Some(s.clone());
        Ok(s)
    }

    /// GET `path` as JSON; anything but 2xx is an error with the BMC's message.
    async fn get(&self, op: &'static str, path: &str) -> Result<Value, OobError> {
        let a = self.request(op, Method::GET, path, None).await?;
        self.ok(op, &a)?;
        serde_json::from_slice(&a.body).map_err(|e| self.err(op, Failure::Malformed(format!("{path}: {e}"))))
    }

    fn ok(&self, op: &'static str, a: &Answer) -> Result<(), OobError> {
        if a.status.is_success() {
            return Ok(());
        }
        Err(self.err(
            op,
            Failure::Http {
                status: a.status.as_u16(),
                message: error_message(a.status, &a.body),
            },
        ))
    }

    /// One request with the credentials; a session token the BMC no longer knows (401) is
    /// replaced once.
    async fn request(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, OobError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| self.err(op, Failure::Config(format!("bad path {path:?}: {e}"))))?;
        let mut fresh_session = false;
        loop {
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .timeout(self.s.timeout)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(b) = body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            rb = match self.s.auth {
                Auth::Basic => rb.basic_auth(&self.s.user, Some(self.s.password.expose())),
                Auth::Session => {
                    let token = self.token(op).await?;
                    rb.header("X-Auth-Token", token.expose())
                }
            };
            let a = self.send(op, rb).await?;
            if a.status == StatusCode::UNAUTHORIZED && self.s.auth == Auth::Session && !fresh_session {
                tracing::info!(host = %self.s.host, "the BMC refused the session token; logging in again");
                *self.session.lock().await = None;
                fresh_session = true;
                continue;
            }
            return Ok(a);
        }
    }

    /// The session's token, logging in when there is none.
    async fn token(&self, op: &'static str) -> Result<Password, OobError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref() {
            return Ok(s.token.clone());
        }
        let url = self
            .base
            .join("/redfish/v1/SessionService/Sessions")
            .map_err(|e| self.err(op, Failure::Config(e.to_string())))?;
        let payload = serde_json::json!({ "UserName": self.s.user, "Password": self.s.password.expose() });
        let rb = self
            .http
            .post(url)
            .timeout(self.s.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_string());
        let a = self.send(op, rb).await?;
        if !a.status.is_success() {
            return Err(self.err(
                op,
                Failure::Http {
                    status: a.status.as_u16(),
                    message: format!("session login refused: {}", error_message(a.status, &a.body)),
                },
            ));
        }
        let token = a
            .headers
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.err(
                    op,
                    Failure::Malformed("the session answer has no X-Auth-Token".into()),
                )
            })?;
        let location = a
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let token = Password::new(token);
        *session = Some(Session {
            token: token.clone(),
            location,
        });
        tracing::info!(host = %self.s.host, url = %self.s.url, "Redfish session opened");
        Ok(token)
    }

    /// Sends, and reads the body up to the limit.
    async fn send(&self, op: &'static str, rb: reqwest::RequestBuilder) -> Result<Answer, OobError> {
        let mut res = rb.send().await.map_err(|e| self.err(op, self.classify(&e)))?;
        let status = res.status();
        let headers = res.headers().clone();
        let limit = self.s.max_body;
        if res.content_length().is_some_and(|n| n > limit as u64) {
            return Err(self.err(op, Failure::TooLarge { limit }));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| self.err(op, self.classify(&e)))? {
            if body.len() + chunk.len() > limit {
                return Err(self.err(op, Failure::TooLarge { limit }));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// What kind of failure a reqwest error is: a timeout, TLS (found anywhere in the chain),
    /// a connection, or a malformed answer.
    fn classify(&self, e: &reqwest::Error) -> Failure {
        let (text, tls) = vsphere_soap::tls::error_chain(e);
        if e.is_timeout() {
            Failure::Timeout {
                after: self.s.timeout,
            }
        } else if tls {
            Failure::Tls(text)
        } else if e.is_connect() {
            Failure::Connect(text)
        } else {
            Failure::Malformed(text)
        }
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        // A session left open is deleted in the background when a runtime is there to do it.
        let session = self.session.get_mut().take();
        if let (
            Some(Session {
                token,
                location: Some(loc),
            }),
            Ok(rt),
        ) = (session, tokio::runtime::Handle::try_current())
            && let Ok(url) = self.base.join(&loc)
        {
            let req = self
                .http
                .delete(url)
                .header("X-Auth-Token", token.expose())
                .timeout(self.s.timeout);
            rt.spawn(async move {
                let _ = req.send().await;
            });
        }
    }
}

/// `PowerState` of a system's JSON.
fn power_of(system: &Value) -> Option<&str> {
    system.get("PowerState").and_then(Value::as_str)
}

/// What a `PowerState` says of the host.
pub fn reading(state: &str) -> Option<PowerReading> {
    match state {
        "Off" => Some(PowerReading::Off),
        "On" | "PoweringOn" | "PoweringOff" | "Paused" => Some(PowerReading::On),
        _ => None,
    }
}

/// A Redfish error's message (`error.message` and each `@Message.ExtendedInfo[].Message`), else
/// the start of the body, else the status's reason.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    let reason = status.canonical_reason().unwrap_or("").to_owned();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
            parts.push(m.to_owned());
        }
        if let Some(info) = v
            .pointer("/error/@Message.ExtendedInfo")
            .and_then(Value::as_array)
        {
            for m in info
                .iter()
                .filter_map(|i| i.get("Message").and_then(Value::as_str))
            {
                if !parts.iter().any(|p| p == m) {
                    parts.push(m.to_owned());
                }
            }
        }
        if !parts.is_empty() {
            return format!("{reason}: {}", parts.join("; "))
                .trim_start_matches(": ")
                .to_owned();
        }
    }
    let text: String = String::from_utf8_lossy(body).trim().chars().take(200).collect();
    if text.is_empty() {
        reason
    } else {
        format!("{reason}: {text}").trim_start_matches(": ").to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_states_are_read_conservatively() {
        assert_eq!(reading("Off"), Some(PowerReading::Off));
        for on in ["On", "PoweringOn", "PoweringOff", "Paused"] {
            assert_eq!(reading(on), Some(PowerReading::On), "{on}");
        }
        assert_eq!(reading("off"), None);
    }

    #[test]
    fn redfish_error_messages_are_kept() {
        let body = br#"{"error": {"code": "Base.1.0.GeneralError", "message": "Can not request power off transition",
            "@Message.ExtendedInfo": [{"Message": "Can not request power off transition"}, {"Message": "It is disabled"}]}}"#;
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, body),
            "Bad Request: Can not request power off transition; It is disabled"
        );
        assert_eq!(error_message(StatusCode::NOT_FOUND, b""), "Not Found");
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"<html>oops</html>"),
            "Bad Gateway: <html>oops</html>"
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let bmc = Bmc::new(RedfishSettings::new(
            "esx-1",
            "http://127.0.0.1:9",
            "root",
            Password::new("hunter2"),
        ))
        .unwrap();
        let d = format!("{bmc:?}");
        assert!(d.contains("esx-1") && !d.contains("hunter2"), "{d}");
        let e = Bmc::new(RedfishSettings::new(
            "esx-1",
            "ftp://bmc",
            "root",
            Password::new("x"),
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("esx-1") && e.to_string().contains("ftp"),
            "{e}"
        );
    }
}
