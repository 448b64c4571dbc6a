//! Operators' requests (evacuate, maintenance) over real HTTP on loopback: token required, handed
//! to the daemon loop's channel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_api::{ApiError, Board, Secret, operator_request, serve};
use am_core::OperatorRequest;
use tokio::sync::{mpsc, oneshot};

#[tokio::test]
async fn evacuate_and_maintenance_need_the_token_and_reach_the_loop() {
    let board = Board::new();
    let token = Secret::new("t0ken-for-tests").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, board.clone(), Some(token.clone()), async {
        let _ = stopped.await;
    }));
    let evacuate = OperatorRequest::Evacuate {
        host: "esx-1".into(),
        reason: "predicted-failure".into(),
        enter_maintenance: true,
    };

    // No loop listens yet: refused, nothing lost silently.
    let err = operator_request(&url, &token, &evacuate).await.unwrap_err();
    assert!(matches!(err, ApiError::Status { status: 503, .. }), "{err}");

    let (tx, mut rx) = mpsc::unbounded_channel();
    board.set_operator(tx);
    let wrong = Secret::new("nope").unwrap();
    let err = operator_request(&url, &wrong, &evacuate).await.unwrap_err();
    assert!(matches!(err, ApiError::Status { status: 401, .. }), "{err}");
    assert!(rx.try_recv().is_err());

    let accepted = operator_request(&url, &token, &evacuate).await.unwrap();
    assert_eq!(
        accepted,
        "evacuate esx-1 (predicted-failure), then enter maintenance"
    );
    assert_eq!(rx.recv().await.unwrap(), evacuate);
    for req in [
        OperatorRequest::MaintenanceEnter { host: "esx-1".into() },
        OperatorRequest::MaintenanceExit {
            host: "esx-1".into(),
            return_vms: true,
        },
        OperatorRequest::Degraded {
            host: "esx-2".into(),
            reason: "PSU 2 failed".into(),
            source: "api".into(),
        },
        OperatorRequest::DegradedClear {
            host: "esx-2".into(),
            source: "api".into(),
        },
        OperatorRequest::Disarm {
            reason: "core switch upgrade".into(),
        },
        OperatorRequest::Arm,
    ] {
        operator_request(&url, &token, &req).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), req);
    }

    // Alertmanager's webhook: the token, then its alerts as predicted failures.
    let notification = r#"{"version":"4","status":"firing","alerts":[
        {"status":"firing","labels":{"alertname":"DimmErrors","instance":"esx-3:9100"},
         "annotations":{"summary":"ECC errors rising"}}]}"#;
    let (status, _) = post(&url, "/api/v1/alertmanager", None, notification).await;
    assert_eq!(status, 401);
    let (status, body) = post(
        &url,
        "/api/v1/alertmanager",
        Some("t0ken-for-tests"),
        notification,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        rx.recv().await.unwrap(),
        OperatorRequest::Degraded {
            host: "esx-3".into(),
            reason: "DimmErrors: ECC errors rising".into(),
            source: "alertmanager".into(),
        }
    );
    let (status, body) = post(&url, "/api/v1/alertmanager", Some("t0ken-for-tests"), "not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Alertmanager"), "{body}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// A raw HTTP/1.1 POST: the status and the body.
async fn post(url: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}
