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
        OperatorRequest::MaintenanceExit { host: "esx-1".into() },
    ] {
        operator_request(&url, &token, &req).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), req);
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
