//! A small HTTP/1.1 client for `am-daemon stats|status|alarms --url http://127.0.0.1:PORT`.
//!
//! One connection per request through hyper's low-level client (no pool, no TLS: the API listens
//! on loopback). URLs are `http://HOST:PORT` with an optional path prefix
//! (`http://127.0.0.1:7480/am` when a proxy mounts the API under `/am`).

use crate::error::ApiError;
use crate::secret::Secret;
use crate::snapshot::{AlarmView, Snapshot, alarm_kind_name, subject_path};
use am_core::{AlarmKind, LogEntry, Subject};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read (a status page of a large cluster is a few MiB).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// A parsed `http://authority[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Base {
    authority: String,
    prefix: String,
}

fn parse_base(url: &str) -> Result<Base, ApiError> {
    let bad = |reason: &str| ApiError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(bad(
            "https is not supported: the API listens on loopback, use http://",
        ));
    } else if url.contains("://") {
        return Err(bad("only http:// URLs are supported"));
    } else {
        url
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("expected http://HOST:PORT"));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Base {
        authority,
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

/// Sends one request and returns the status and body of a 2xx answer; other statuses become
/// [`ApiError::Status`] with the message of the JSON error body.
async fn request(url: &str, method: Method, path: &str, token: Option<&Secret>) -> Result<Bytes, ApiError> {
    let base = parse_base(url)?;
    let full = format!("http://{}{}{}", base.authority, base.prefix, path);
    let work = async {
        let stream = TcpStream::connect(&base.authority)
            .await
            .map_err(|source| ApiError::Connect {
                addr: base.authority.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let http = |source| ApiError::Http {
            url: full.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API client connection ended with an error");
            }
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{}", base.prefix, path))
            .header(header::HOST, base.authority.as_str())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("am-api/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = token {
            match HeaderValue::from_str(&format!("Bearer {}", t.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    builder = builder.header(header::AUTHORIZATION, v);
                }
                Err(_) => return Err(ApiError::Token("the token is not a valid header value".into())),
            }
        }
        let req = builder.body(Empty::<Bytes>::new()).map_err(|e| ApiError::Url {
            url: full.clone(),
            reason: e.to_string(),
        })?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ApiError::Status {
                url: full.clone(),
                status: status.as_u16(),
                message: format!("cannot read the answer: {e}"),
            })?
            .to_bytes();
        driver.abort();
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().chars().take(500).collect());
        Err(ApiError::Status {
            url: full.clone(),
            status: status.as_u16(),
            message,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::Timeout {
            url: full,
            secs: REQUEST_TIMEOUT.as_secs(),
        }),
    }
}

async fn get_json<T: DeserializeOwned>(url: &str, path: &str) -> Result<T, ApiError> {
    let body = request(url, Method::GET, path, None).await?;
    serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
        url: format!("{}{path}", url.trim_end_matches('/')),
        source,
    })
}

#[derive(serde::Deserialize)]
struct Alarms {
    alarms: Vec<AlarmView>,
}

#[derive(serde::Deserialize)]
struct Events {
    events: Vec<LogEntry>,
}

#[derive(serde::Deserialize)]
struct Acked {
    acknowledged: AlarmView,
}

/// `GET /api/v1/status`.
pub async fn fetch_status(url: &str) -> Result<Snapshot, ApiError> {
    get_json(url, "/api/v1/status").await
}

/// `GET /api/v1/alarms`.
pub async fn fetch_alarms(url: &str) -> Result<Vec<AlarmView>, ApiError> {
    Ok(get_json::<Alarms>(url, "/api/v1/alarms").await?.alarms)
}

/// `GET /api/v1/events?limit=N`, oldest first.
pub async fn fetch_events(url: &str, limit: usize) -> Result<Vec<LogEntry>, ApiError> {
    Ok(get_json::<Events>(url, &format!("/api/v1/events?limit={limit}"))
        .await?
        .events)
}

/// `GET /readyz`: whether the daemon has seen its first inventory.
pub async fn fetch_ready(url: &str) -> Result<bool, ApiError> {
    match request(url, Method::GET, "/readyz", None).await {
        Ok(_) => Ok(true),
        Err(ApiError::Status { status: 503, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `POST /api/v1/alarms/{kind}/{subject}/ack` with the token; `by` says who (free text).
pub async fn ack_alarm(
    url: &str,
    token: &Secret,
    kind: AlarmKind,
    subject: &Subject,
    by: Option<&str>,
) -> Result<AlarmView, ApiError> {
    let mut path = format!(
        "/api/v1/alarms/{}/{}/ack",
        encode_segment(&alarm_kind_name(kind)),
        encode_segment(&subject_path(subject))
    );
    if let Some(by) = by {
        path.push_str("?by=");
        path.push_str(&encode_segment(by));
    }
    let body = request(url, Method::POST, &path, Some(token)).await?;
    let acked: Acked = serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
        url: format!("{}{path}", url.trim_end_matches('/')),
        source,
    })?;
    Ok(acked.acknowledged)
}

/// An operator's request with the token: `POST /api/v1/hosts/{id}/evacuate` (with `reason` and
/// `enter_maintenance`), `/api/v1/hosts/{id}/maintenance/enter|exit` (`return_vms`),
/// `/api/v1/hosts/{id}/degraded[/clear]`, `/api/v1/disarm`, `/api/v1/arm`,
/// `/api/v1/datastores/{id}/evacuate`. Returns what the daemon accepted, in words; its outcome
/// shows in the events.
pub async fn operator_request(
    url: &str,
    token: &Secret,
    req: &am_core::OperatorRequest,
) -> Result<String, ApiError> {
    use am_core::OperatorRequest as R;
    let host = req.host().map(|h| encode_segment(h.as_str())).unwrap_or_default();
    let path = match req {
        R::Evacuate {
            reason,
            enter_maintenance,
            ..
        } => format!(
            "/api/v1/hosts/{host}/evacuate?reason={}&enter_maintenance={enter_maintenance}",
            encode_segment(reason)
        ),
        R::MaintenanceEnter { .. } => format!("/api/v1/hosts/{host}/maintenance/enter"),
        R::MaintenanceExit { return_vms, .. } => {
            format!("/api/v1/hosts/{host}/maintenance/exit?return_vms={return_vms}")
        }
        R::Degraded { reason, .. } => {
            format!("/api/v1/hosts/{host}/degraded?reason={}", encode_segment(reason))
        }
        R::DegradedClear { .. } => format!("/api/v1/hosts/{host}/degraded/clear"),
        R::Disarm { reason } => format!("/api/v1/disarm?reason={}", encode_segment(reason)),
        R::Arm => "/api/v1/arm".to_owned(),
        R::EvacuateDatastore { datastore } => {
            format!(
                "/api/v1/datastores/{}/evacuate",
                encode_segment(datastore.as_str())
            )
        }
    };
    let body = request(url, Method::POST, &path, Some(token)).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
        url: format!("{}{path}", url.trim_end_matches('/')),
        source,
    })?;
    Ok(v.get("accepted")
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_owned())
}

/// Percent-encodes everything but unreserved characters and `:`.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let b = parse_base("http://127.0.0.1:7480").unwrap();
        assert_eq!((b.authority.as_str(), b.prefix.as_str()), ("127.0.0.1:7480", ""));
        let b = parse_base("http://[::1]:9/am/").unwrap();
        assert_eq!((b.authority.as_str(), b.prefix.as_str()), ("[::1]:9", "/am"));
        assert_eq!(parse_base("localhost").unwrap().authority, "localhost:80");
        assert_eq!(parse_base("[::1]").unwrap().authority, "[::1]:80");
        assert!(
            parse_base("https://x:1")
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        assert!(parse_base("ftp://x:1").is_err());
        assert!(parse_base("http://").is_err());
        assert_eq!(encode_segment("vm:a b/c"), "vm:a%20b%2Fc");
    }
}
