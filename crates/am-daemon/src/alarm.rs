//! Alarm delivery. The supervisor raises and clears alarms (deduplicated); sinks deliver them.

use am_core::{AlarmChange, Severity};

/// Somewhere alarms go (the log, a webhook, vCenter events).
pub trait AlarmSink: Send {
    /// Delivers one change. Delivery problems are the sink's to log; they never stop the engine.
    fn deliver(&mut self, change: &AlarmChange);
}

/// Writes alarms to the tracing log.
#[derive(Debug, Default)]
pub struct LogSink;

impl AlarmSink for LogSink {
    fn deliver(&mut self, change: &AlarmChange) {
        match change {
            AlarmChange::Raise(a) => match a.severity {
                Severity::Critical => {
                    tracing::error!(kind = ?a.kind, subject = %a.subject, "ALARM {}", a.message)
                }
                Severity::Warning => {
                    tracing::warn!(kind = ?a.kind, subject = %a.subject, "ALARM {}", a.message)
                }
                Severity::Info => tracing::info!(kind = ?a.kind, subject = %a.subject, "ALARM {}", a.message),
            },
            AlarmChange::Clear { kind, subject, .. } => tracing::info!(?kind, %subject, "alarm cleared"),
        }
    }
}

/// Why a webhook sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL is not http(s).
    #[error("alarms.webhook_url `{0}` is not an http(s) URL")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("alarms.webhook_url: cannot build the HTTP client: {0}")]
    Client(String),
}

/// Posts every alarm change as JSON to a webhook: ours (`{"event": "raised"|"cleared", "alarm":
/// ...}`), or Alertmanager's `POST /api/v2/alerts` payload. Delivery runs in the background with a
/// timeout; a failure is logged and never stops the engine. TLS is verified with the system's
/// roots.
pub struct WebhookSink {
    url: String,
    alertmanager: bool,
    client: reqwest::Client,
}

impl WebhookSink {
    /// A sink posting to `url`; `alertmanager` selects Alertmanager's payload.
    pub fn new(url: &str, alertmanager: bool) -> Result<WebhookSink, SinkError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SinkError::Url(url.to_owned()));
        }
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
        for cert in rustls_native_certs::load_native_certs().certs {
            if let Ok(c) = reqwest::Certificate::from_der(&cert) {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(WebhookSink {
            url: url.to_owned(),
            alertmanager,
            client,
        })
    }
}

impl AlarmSink for WebhookSink {
    fn deliver(&mut self, change: &AlarmChange) {
        let body = payload(change, self.alertmanager, std::time::SystemTime::now());
        let request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default());
        let url = self.url.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%url, "alarm webhook: no runtime to deliver on");
            return;
        };
        runtime.spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(%url, status = %r.status(), "alarm webhook refused the alarm"),
                Err(e) => tracing::warn!(%url, error = %e, "alarm webhook unreachable"),
            }
        });
    }
}

/// The JSON body for one alarm change; `now` stamps Alertmanager's `startsAt`/`endsAt`.
pub fn payload(change: &AlarmChange, alertmanager: bool, now: std::time::SystemTime) -> serde_json::Value {
    let stamp = rfc3339(now);
    match (change, alertmanager) {
        (AlarmChange::Raise(a), false) => serde_json::json!({ "event": "raised", "alarm": a }),
        (AlarmChange::Clear { kind, subject, at }, false) => {
            serde_json::json!({ "event": "cleared", "alarm": { "kind": kind, "subject": subject, "at": at } })
        }
        (AlarmChange::Raise(a), true) => serde_json::json!([{
            "labels": {
                "alertname": format!("{:?}", a.kind),
                "severity": a.severity,
                "subject": a.subject.to_string(),
                "service": "availability-manager",
            },
            // Labels must match the resolving message, which carries no name: the name goes
            // with the text.
            "annotations": { "summary": a.message, "name": a.name.clone().unwrap_or_else(|| a.subject.to_string()) },
            "startsAt": stamp,
        }]),
        (AlarmChange::Clear { kind, subject, .. }, true) => serde_json::json!([{
            "labels": {
                "alertname": format!("{kind:?}"),
                "subject": subject.to_string(),
                "service": "availability-manager",
            },
            "endsAt": stamp,
        }]),
    }
}

/// `2026-11-22T01:02:03Z` (UTC, seconds).
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use am_core::{Alarm, AlarmKind, Subject, Time};
    use std::time::{Duration, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn raise() -> AlarmChange {
        AlarmChange::Raise(Alarm {
            name: Some("esx-3".into()),
            kind: AlarmKind::HostIsolated,
            subject: Subject::Host("h3".into()),
            severity: Severity::Critical,
            message: "host h3 isolated".into(),
            at: Time::from_secs(24),
        })
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_309_323)),
            "2026-11-22T01:02:03Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn payloads_name_the_alarm_ours_and_alertmanagers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_309_323);
        let ours = payload(&raise(), false, now);
        assert_eq!(ours["event"], "raised");
        assert_eq!(ours["alarm"]["kind"], "host_isolated");
        assert_eq!(ours["alarm"]["name"], "esx-3", "operators read names");
        let am = payload(&raise(), true, now);
        assert_eq!(am[0]["annotations"]["name"], "esx-3");
        assert_eq!(am[0]["labels"]["alertname"], "HostIsolated");
        assert_eq!(am[0]["labels"]["severity"], "critical");
        assert_eq!(am[0]["startsAt"], "2026-11-22T01:02:03Z");
        let clear = AlarmChange::Clear {
            kind: AlarmKind::HostIsolated,
            subject: Subject::Host("h3".into()),
            at: Time::from_secs(90),
        };
        let resolved = payload(&clear, true, now);
        assert_eq!(resolved[0]["endsAt"], "2026-11-22T01:02:03Z");
        assert_eq!(payload(&clear, false, now)["event"], "cleared");
    }

    #[test]
    fn a_bad_url_is_named() {
        let e = WebhookSink::new("ftp://x", false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("alarms.webhook_url") && e.contains("ftp://x"), "{e}");
    }

    #[tokio::test]
    async fn an_alarm_reaches_the_webhook_over_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= head_end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let mut sink = WebhookSink::new(&url, true).unwrap();
        sink.deliver(&raise());
        let request = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        assert!(request.starts_with("POST /hook"), "{request}");
        assert!(request.contains("\"alertname\":\"HostIsolated\""), "{request}");
    }
}
