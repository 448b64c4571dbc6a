//! The HTTP server: [`serve`].

use crate::board::{AckError, Board};
use crate::error::ApiError;
use crate::metrics::{
    OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, render_openmetrics, render_prometheus,
};
use crate::secret::Secret;
use crate::snapshot::{parse_alarm_kind, parse_subject};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// At most this many connections are served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, open connections get this long to finish their request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default and largest `limit` of `GET /api/v1/events`.
pub const DEFAULT_EVENTS: usize = 100;

/// The routes, for `GET /` and the docs.
pub const ROUTES: [(&str, &str, &str); 14] = [
    ("GET", "/healthz", "the process is alive: 200 ok"),
    (
        "GET",
        "/readyz",
        "200 once the first inventory was seen, else 503",
    ),
    (
        "GET",
        "/metrics",
        "Prometheus text (OpenMetrics when asked for in Accept)",
    ),
    ("GET", "/api/v1/status", "the snapshot as JSON"),
    (
        "GET",
        "/api/v1/events?limit=N",
        "the latest N audit lines (default 100)",
    ),
    (
        "GET",
        "/api/v1/alarms",
        "active alarms with their acknowledgements",
    ),
    (
        "POST",
        "/api/v1/alarms/{kind}/{subject}/ack",
        "acknowledge an alarm (Authorization: Bearer <token>); subject is host:ID, vm:ID, cluster or manager",
    ),
    (
        "POST",
        "/api/v1/hosts/{id}/evacuate?reason=R&enter_maintenance=true",
        "evacuate a host by live migration in waves (Authorization: Bearer <token>)",
    ),
    (
        "POST",
        "/api/v1/hosts/{id}/maintenance/enter|exit?return_vms=true",
        "put an empty host into maintenance mode, or take it back, with its VMs if asked (Authorization: Bearer <token>)",
    ),
    (
        "POST",
        "/api/v1/hosts/{id}/degraded[/clear]?reason=R",
        "mark a host predicted to fail, or withdraw it (Authorization: Bearer <token>)",
    ),
    (
        "POST",
        "/api/v1/alertmanager",
        "Alertmanager webhook receiver: firing alerts mark their host degraded (label host, hostname, node or instance), resolved ones clear it (Authorization: Bearer <token>)",
    ),
    (
        "POST",
        "/api/v1/disarm?reason=R",
        "stop all automatic recovery, cluster-wide; monitoring and alarms go on (Authorization: Bearer <token>)",
    ),
    (
        "POST",
        "/api/v1/arm",
        "resume automatic recovery (Authorization: Bearer <token>)",
    ),
    (
        "POST",
        "/api/v1/datastores/{id}/evacuate",
        "storage maintenance: move every VM's files off a datastore (id or name) by Storage vMotion (Authorization: Bearer <token>)",
    ),
];

/// Serves the API on `listener` until `shutdown` completes, then lets open requests finish (for at
/// most [`SHUTDOWN_GRACE`]).
///
/// Reads are open to whoever reaches the listener: bind it to loopback unless the network in
/// front of it is trusted. Requests that change state need `Authorization: Bearer <token>`; with
/// `token` `None` they are all refused (403).
///
/// Errors only when the listener itself fails for good; a failing connection is logged and
/// dropped.
pub async fn serve(
    listener: TcpListener,
    board: Board,
    token: Option<Secret>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiError> {
    let local = listener.local_addr().map_err(ApiError::Serve)?;
    if !local.ip().is_loopback() {
        tracing::warn!(
            %local,
            "the API listens beyond loopback: status, metrics and events are readable by anyone who reaches it"
        );
    }
    if token.is_none() {
        tracing::info!(%local, "no API token configured: state-changing requests are refused");
    }
    let app = Arc::new(App { board, token });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tracing::info!(%local, "API listening");
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move {
                if req.uri().path().trim_end_matches('/') == "/api/v1/alertmanager" {
                    return Ok::<_, Infallible>(app.alertmanager(peer, req).await);
                }
                Ok::<_, Infallible>(app.handle(peer, &req))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("API connections still open after {}s: dropped", SHUTDOWN_GRACE.as_secs());
        }
    }
    tracing::info!(%local, "API stopped");
    Ok(())
}

struct App {
    board: Board,
    token: Option<Secret>,
}

type Resp = Response<Full<Bytes>>;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    status: u16,
    message: String,
}

fn bytes_response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => bytes_response(status, "application/json", body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    };
    let body = ErrorBody {
        error: code,
        status: status.as_u16(),
        message: message.into(),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    bytes_response(status, "application/json", bytes)
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this path answers {allow} only"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// `%XX` decoding of one path segment; `None` when malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

impl App {
    fn handle<B>(&self, peer: SocketAddr, req: &Request<B>) -> Resp {
        let method = req.method();
        let path = req.uri().path();
        let query = req.uri().query();
        let read = method == Method::GET || method == Method::HEAD;
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        match segments.as_slice() {
            [] | [""] if read => json(StatusCode::OK, &self.index()),
            ["healthz"] if read => bytes_response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            ["readyz"] if read => match self.board.readiness() {
                Ok(()) => bytes_response(StatusCode::OK, "text/plain; charset=utf-8", "ready\n"),
                Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
            },
            ["metrics"] if read => {
                let snap = self.board.summary();
                if wants_openmetrics(req.headers()) {
                    bytes_response(
                        StatusCode::OK,
                        OPENMETRICS_CONTENT_TYPE,
                        render_openmetrics(&snap),
                    )
                } else {
                    bytes_response(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, render_prometheus(&snap))
                }
            }
            ["api", "v1", "status"] if read => json(StatusCode::OK, &self.board.snapshot()),
            ["api", "v1", "events"] if read => self.events(query),
            ["api", "v1", "alarms"] if read => json(
                StatusCode::OK,
                &serde_json::json!({ "alarms": self.board.alarms() }),
            ),
            ["api", "v1", "alarms", kind, subject, "ack"] => {
                if method != Method::POST {
                    return method_not_allowed("POST");
                }
                if let Some(refusal) = self.refusal(peer, req.headers()) {
                    return refusal;
                }
                self.ack(kind, subject, query)
            }
            ["api", "v1", "hosts", host, what @ ..] if !what.is_empty() => {
                if method != Method::POST {
                    return method_not_allowed("POST");
                }
                if let Some(refusal) = self.refusal(peer, req.headers()) {
                    return refusal;
                }
                let Some(host) = percent_decode(host).filter(|h| !h.is_empty()) else {
                    return error(StatusCode::BAD_REQUEST, "malformed host id in the path");
                };
                let param = |name: &str| query_param(query, name).and_then(percent_decode);
                match crate::operator::host_request(host, what, param) {
                    Ok(r) => self.operator(vec![r]),
                    Err((code, why)) => {
                        error(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), why)
                    }
                }
            }
            ["api", "v1", switch @ ("disarm" | "arm")] => {
                if method != Method::POST {
                    return method_not_allowed("POST");
                }
                if let Some(refusal) = self.refusal(peer, req.headers()) {
                    return refusal;
                }
                let req = if *switch == "arm" {
                    am_core::OperatorRequest::Arm
                } else {
                    let reason = query_param(query, "reason")
                        .and_then(percent_decode)
                        .filter(|r| !r.is_empty())
                        .map_or_else(|| "operator".to_owned(), |r| r.chars().take(200).collect());
                    am_core::OperatorRequest::Disarm { reason }
                };
                self.operator(vec![req])
            }
            ["api", "v1", "datastores", ds, "evacuate"] => {
                if method != Method::POST {
                    return method_not_allowed("POST");
                }
                if let Some(refusal) = self.refusal(peer, req.headers()) {
                    return refusal;
                }
                match percent_decode(ds).filter(|d| !d.is_empty()) {
                    Some(ds) => self.operator(vec![am_core::OperatorRequest::EvacuateDatastore {
                        datastore: ds.as_str().into(),
                    }]),
                    None => error(StatusCode::BAD_REQUEST, "malformed datastore id in the path"),
                }
            }
            []
            | [""]
            | ["healthz" | "readyz" | "metrics"]
            | ["api", "v1", "status" | "events" | "alarms"] => method_not_allowed("GET, HEAD"),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such path: {path} (GET / lists the paths)"),
            ),
        }
    }

    fn index(&self) -> serde_json::Value {
        let routes: Vec<serde_json::Value> = ROUTES
            .iter()
            .map(|(m, p, what)| serde_json::json!({ "method": m, "path": p, "what": what }))
            .collect();
        serde_json::json!({ "service": "am-daemon", "routes": routes })
    }

    fn events(&self, query: Option<&str>) -> Resp {
        let cap = self.board.recent_capacity();
        let limit = match query_param(query, "limit") {
            None => DEFAULT_EVENTS.min(cap),
            Some(v) => match v.parse::<usize>() {
                Ok(n) => n.min(cap),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("limit must be a number from 0 to {cap}, not `{v}`"),
                    );
                }
            },
        };
        json(
            StatusCode::OK,
            &serde_json::json!({ "events": self.board.recent(limit) }),
        )
    }

    /// The answer refusing a state-changing request, or `None` when it is authorized.
    fn refusal(&self, peer: SocketAddr, headers: &HeaderMap) -> Option<Resp> {
        let Some(token) = &self.token else {
            tracing::warn!(%peer, "state-changing API request refused: no API token configured");
            return Some(error(
                StatusCode::FORBIDDEN,
                "changes through the API are disabled: no API token is configured",
            ));
        };
        let (ok, why) = match bearer(headers) {
            None => (false, "missing bearer token (Authorization: Bearer <token>)"),
            Some(p) if token.matches(p) => (true, ""),
            Some(_) => (false, "invalid bearer token"),
        };
        if ok {
            return None;
        }
        tracing::warn!(%peer, reason = why, "state-changing API request refused");
        let mut r = error(StatusCode::UNAUTHORIZED, why);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"am\""),
        );
        Some(r)
    }

    /// Operator requests, handed to the daemon's loop.
    fn operator(&self, reqs: Vec<am_core::OperatorRequest>) -> Resp {
        let mut accepted = Vec::new();
        for req in reqs {
            let text = req.to_string();
            if !self.board.request(req) {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the daemon loop does not take requests now",
                );
            }
            tracing::info!(request = %text, "operator request accepted");
            accepted.push(text);
        }
        let accepted = match accepted.as_slice() {
            [one] => serde_json::json!(one),
            _ => serde_json::json!(accepted),
        };
        json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": accepted, "see": "/api/v1/events" }),
        )
    }

    /// `POST /api/v1/alertmanager`: an Alertmanager webhook notification (at most
    /// [`MAX_ALERTMANAGER_BODY`](crate::operator::MAX_ALERTMANAGER_BODY) bytes).
    async fn alertmanager(&self, peer: SocketAddr, req: Request<hyper::body::Incoming>) -> Resp {
        use http_body_util::BodyExt;
        if req.method() != Method::POST {
            return method_not_allowed("POST");
        }
        if let Some(refusal) = self.refusal(peer, req.headers()) {
            return refusal;
        }
        let limited = http_body_util::Limited::new(req.into_body(), crate::operator::MAX_ALERTMANAGER_BODY);
        let body = match limited.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "Alertmanager notification not read (at most {} bytes): {e}",
                        crate::operator::MAX_ALERTMANAGER_BODY
                    ),
                );
            }
        };
        match crate::operator::alertmanager(&body) {
            Ok((reqs, skipped)) => {
                if skipped > 0 {
                    tracing::warn!(
                        skipped,
                        "Alertmanager alerts naming no host (labels host, hostname, node, instance) skipped"
                    );
                }
                if reqs.is_empty() {
                    return json(
                        StatusCode::OK,
                        &serde_json::json!({ "accepted": [], "skipped": skipped }),
                    );
                }
                self.operator(reqs)
            }
            Err((code, why)) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), why),
        }
    }

    fn ack(&self, kind: &str, subject: &str, query: Option<&str>) -> Resp {
        let (Some(kind_s), Some(subject_s)) = (percent_decode(kind), percent_decode(subject)) else {
            return error(StatusCode::BAD_REQUEST, "malformed percent-encoding in the path");
        };
        let Some(kind) = parse_alarm_kind(&kind_s) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown alarm kind `{kind_s}` (e.g. host_unreachable, recovery_failed)"),
            );
        };
        let Some(subject) = parse_subject(&subject_s) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad subject `{subject_s}`: host:ID, vm:ID, cluster or manager"),
            );
        };
        let by = query_param(query, "by")
            .and_then(percent_decode)
            .filter(|b| !b.is_empty())
            .map(|b| b.chars().take(64).collect::<String>());
        match self.board.acknowledge(kind, &subject, by) {
            Ok(alarm) => {
                tracing::info!(kind = %kind_s, %subject, by = ?alarm.acknowledged.as_ref().and_then(|a| a.by.as_deref()), "alarm acknowledged");
                json(StatusCode::OK, &serde_json::json!({ "acknowledged": alarm }))
            }
            Err(e @ AckError::NotActive { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_parsers() {
        assert_eq!(percent_decode("vm%3Aweb%201").as_deref(), Some("vm:web 1"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(query_param(Some("a=1&limit=5"), "limit"), Some("5"));
        assert_eq!(query_param(Some("limit"), "limit"), Some(""));
        assert_eq!(query_param(None, "limit"), None);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
