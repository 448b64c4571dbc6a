//! The API over real HTTP on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_api::{
    ApiError, Board, Secret, Snapshot, fetch_alarms, fetch_events, fetch_ready, fetch_status, serve,
};
use am_core::{AlarmKind, Subject};
use common::{Cluster, http};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiError>>,
}

async fn start(board: Board, token: Option<Secret>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, board, token, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        url: format!("http://{addr}"),
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let board = Board::new();
    let srv = start(board.clone(), None).await;

    let r = http(srv.addr, "GET", "/healthz", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));

    let r = http(srv.addr, "GET", "/readyz", &[]).await;
    assert_eq!(r.status, 503, "no inventory yet");
    assert_eq!(r.json()["error"], "unavailable");
    assert!(!fetch_ready(&srv.url).await.unwrap());

    // The first inventory makes it ready.
    let c = Cluster::new();
    let out = am_core::Output::default();
    board.observe(c.now, &out, &c.sup, None);
    let r = http(srv.addr, "GET", "/readyz", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
    assert!(fetch_ready(&srv.url).await.unwrap());

    // HEAD is answered like GET, without a body.
    let r = http(srv.addr, "HEAD", "/healthz", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    srv.stop().await;
}

#[tokio::test]
async fn status_events_and_alarms_as_json() {
    let c = Cluster::story();
    let srv = start(c.board.clone(), None).await;

    let r = http(srv.addr, "GET", "/api/v1/status", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    for key in [
        "at",
        "now",
        "hosts",
        "vms",
        "cluster",
        "alarms",
        "in_flight",
        "executor",
        "recent",
    ] {
        assert!(v.get(key).is_some(), "status has `{key}`: {v}");
    }
    assert_eq!(v["hosts"].as_array().unwrap().len(), 2);
    assert_eq!(v["hosts"][0]["id"], "h1");
    assert_eq!(v["hosts"][0]["state"], "up");
    assert_eq!(v["hosts"][0]["failure_domain"], "rack-a");
    assert_eq!(v["hosts"][0]["capacity"]["cpu_mhz"], 20_000);
    assert_eq!(v["cluster"]["protected_vms"], 3);
    assert_eq!(v["cluster"]["recoveries"], 1);
    assert_eq!(v["cluster"]["mttr_s"], 9.0);
    assert_eq!(v["executor"]["ops"]["reset"]["succeeded"], 1);

    // The client reads the same thing back into a Snapshot.
    let snap: Snapshot = fetch_status(&srv.url).await.unwrap();
    let web = snap.vm(&"web".into()).unwrap();
    assert_eq!(web.state, "healthy");
    assert_eq!(web.restarts, 1);
    assert_eq!(web.up_since, Some(am_core::Time::from_secs(20)));
    assert!(web.uptime_s.unwrap() >= 20.0);
    assert_eq!(
        web.last_incident.as_ref().unwrap().outcome.as_deref(),
        Some("recovered by restart")
    );
    assert_eq!(snap.vm(&"db".into()).unwrap().state, "off(by alice)");

    // Events: the latest N audit lines, oldest first.
    let r = http(srv.addr, "GET", "/api/v1/events?limit=3", &[]).await;
    assert_eq!(r.status, 200);
    let events = r.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert!(
            e["at"].is_u64() && e["subject"].is_object() && e["kind"].is_string(),
            "{e}"
        );
    }
    let all = fetch_events(&srv.url, 1000).await.unwrap();
    assert!(all.len() > 3);
    assert_eq!(all[all.len() - 3..].len(), 3);
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
    let r = http(srv.addr, "GET", "/api/v1/events", &[]).await;
    assert_eq!(r.json()["events"].as_array().unwrap().len(), all.len().min(100));
    let r = http(srv.addr, "GET", "/api/v1/events?limit=lots", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");

    // Alarms.
    let r = http(srv.addr, "GET", "/api/v1/alarms", &[]).await;
    assert_eq!(r.status, 200);
    let alarms = r.json()["alarms"].as_array().unwrap().clone();
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0]["kind"], "vm_powered_off");
    assert_eq!(
        alarms[0]["subject"],
        serde_json::json!({"type": "vm", "id": "db"})
    );
    assert!(alarms[0]["acknowledged"].is_null());
    let alarms = fetch_alarms(&srv.url).await.unwrap();
    assert_eq!(alarms[0].kind, AlarmKind::VmPoweredOff);
    srv.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let c = Cluster::story();
    let srv = start(c.board.clone(), None).await;

    let r = http(srv.addr, "GET", "/nope", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    assert_eq!(r.json()["status"], 404);
    assert!(r.json()["message"].as_str().unwrap().contains("/nope"));

    let r = http(srv.addr, "POST", "/api/v1/status", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    assert_eq!(r.json()["error"], "method_not_allowed");

    let r = http(srv.addr, "GET", "/api/v1/alarms/vm_powered_off/vm:db/ack", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");

    let r = http(srv.addr, "DELETE", "/metrics", &[]).await;
    assert_eq!(r.status, 405);

    // The index lists the routes.
    let r = http(srv.addr, "GET", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["routes"].as_array().unwrap().len(), am_api::ROUTES.len());

    // The client turns error answers into ApiError::Status with the server's message.
    let err = fetch_status(&format!("{}/prefix", srv.url)).await.unwrap_err();
    match err {
        ApiError::Status {
            status: 404, message, ..
        } => assert!(message.contains("no such path")),
        other => panic!("unexpected {other}"),
    }
    srv.stop().await;

    // Nobody listening any more.
    assert!(matches!(
        fetch_status(&srv_url_of_closed()).await,
        Err(ApiError::Connect { .. })
    ));
}

fn srv_url_of_closed() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn acknowledging_is_refused_without_a_configured_token() {
    let c = Cluster::story();
    let srv = start(c.board.clone(), None).await;
    let path = "/api/v1/alarms/vm_powered_off/vm:db/ack";
    for headers in [&[][..], &["Authorization: Bearer anything"][..]] {
        let r = http(srv.addr, "POST", path, headers).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.json()["error"], "forbidden");
    }
    assert!(c.board.alarms()[0].acknowledged.is_none());
    srv.stop().await;
}

#[tokio::test]
async fn acknowledging_needs_the_token_and_lasts_as_long_as_the_alarm() {
    let mut c = Cluster::story();
    let token = Secret::new("t0ken-for-tests").unwrap();
    let srv = start(c.board.clone(), Some(token.clone())).await;
    let path = "/api/v1/alarms/vm_powered_off/vm:db/ack";

    let r = http(srv.addr, "POST", path, &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"].starts_with("Bearer"));
    assert_eq!(r.json()["error"], "unauthorized");
    let r = http(srv.addr, "POST", path, &["Authorization: Bearer wrong"]).await;
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("t0ken"), "the token never shows");
    let r = http(srv.addr, "POST", path, &["Authorization: Basic dTpw"]).await;
    assert_eq!(r.status, 401);
    assert!(c.board.alarms()[0].acknowledged.is_none());

    let auth = "Authorization: Bearer t0ken-for-tests";
    let r = http(srv.addr, "POST", &format!("{path}?by=bob"), &[auth]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["acknowledged"]["kind"], "vm_powered_off");
    assert_eq!(r.json()["acknowledged"]["acknowledged"]["by"], "bob");
    let alarms = fetch_alarms(&srv.url).await.unwrap();
    assert_eq!(
        alarms[0].acknowledged.as_ref().unwrap().by.as_deref(),
        Some("bob")
    );
    let snap = fetch_status(&srv.url).await.unwrap();
    assert!(snap.alarms[0].acknowledged.is_some());

    // Through the client, percent-encoded; acknowledging again keeps the first acknowledgement.
    let again = am_api::ack_alarm(
        &srv.url,
        &token,
        AlarmKind::VmPoweredOff,
        &Subject::Vm("db".into()),
        Some("carol"),
    )
    .await
    .unwrap();
    assert_eq!(again.acknowledged.unwrap().by.as_deref(), Some("bob"));
    // A later step keeps it.
    c.at(45);
    let out = c.sup.step(c.now, am_core::Observation::Tick);
    c.board.observe(c.now, &out, &c.sup, None);
    assert!(c.board.alarms()[0].acknowledged.is_some());

    // No such alarm, bad kind, bad subject.
    let r = http(
        srv.addr,
        "POST",
        "/api/v1/alarms/host_unreachable/host:h1/ack",
        &[auth],
    )
    .await;
    assert_eq!(r.status, 404);
    let r = http(srv.addr, "POST", "/api/v1/alarms/meltdown/host:h1/ack", &[auth]).await;
    assert_eq!(r.status, 400);
    let r = http(
        srv.addr,
        "POST",
        "/api/v1/alarms/vm_powered_off/planet:x/ack",
        &[auth],
    )
    .await;
    assert_eq!(r.status, 400);
    let wrong = Secret::new("nope").unwrap();
    let err = am_api::ack_alarm(
        &srv.url,
        &wrong,
        AlarmKind::VmPoweredOff,
        &Subject::Vm("db".into()),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ApiError::Status { status: 401, .. }), "{err}");
    assert!(!err.to_string().contains("nope"));

    // The alarm clears: the acknowledgement goes with it.
    c.power_on_db(50);
    assert!(c.board.alarms().is_empty());
    let r = http(srv.addr, "POST", path, &[auth]).await;
    assert_eq!(r.status, 404);
    srv.stop().await;
}

/// Minimal checks of the Prometheus text format 0.0.4: every sample belongs to a family with a
/// `# TYPE` line before it, names and label sets are well-formed, values are numbers, and a
/// family's samples are together. Returns the samples as `name{labels}` -> value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut seen_families: Vec<String> = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines");
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), ty.to_owned()).is_none(),
                "one TYPE per family: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(valid_name(rest.split(' ').next().unwrap()), "{line}");
            continue;
        }
        assert!(!line.starts_with('#'), "only HELP and TYPE comments: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("numeric value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap();
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(valid_name(k), "{line}");
                assert!(v.starts_with('"'), "{line}");
            }
        }
        let ty = types
            .get(name)
            .unwrap_or_else(|| panic!("sample without a TYPE before it: {line}"));
        if ty == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
        match seen_families.last() {
            Some(last) if last == name => {}
            _ => {
                assert!(!seen_families.contains(&name.to_owned()), "family split: {line}");
                seen_families.push(name.to_owned());
            }
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_are_those_of_the_whole_snapshot() {
    // `/metrics` reads a summary without the host and VM rows (no copy of every row per
    // scrape): what it serves is what the whole snapshot renders, the snapshot's age aside.
    let c = Cluster::story();
    let srv = start(c.board.clone(), None).await;
    let r = http(srv.addr, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    // (Sorted: the series of one family come in no fixed order.)
    let without_age = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("am_snapshot_age_seconds"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let whole = am_api::render_prometheus(&c.board.snapshot());
    assert!(whole.contains("am_vms{"), "{whole}");
    assert_eq!(without_age(&r.body), without_age(&whole));
    assert!(c.board.summary().vms.is_empty() && c.board.summary().hosts.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_exposition() {
    let c = Cluster::story();
    let srv = start(c.board.clone(), None).await;
    let r = http(srv.addr, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let m = parse_exposition(&r.body);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{}", r.body));
    assert_eq!(get(r#"am_hosts{state="up"}"#), 2.0);
    assert_eq!(get(r#"am_hosts{state="dead"}"#), 0.0);
    assert_eq!(get(r#"am_vms{state="healthy"}"#), 1.0);
    assert_eq!(get(r#"am_vms{state="off"}"#), 2.0);
    assert_eq!(get(r#"am_vms{state="unprotected"}"#), 1.0);
    assert_eq!(get("am_protected_vms"), 3.0);
    assert_eq!(get(r#"am_alarms{kind="vm_powered_off"}"#), 1.0);
    assert_eq!(get(r#"am_alarms{kind="host_unreachable"}"#), 0.0);
    assert_eq!(
        get(r#"am_alarms_by_severity{severity="warning"}"#)
            + get(r#"am_alarms_by_severity{severity="info"}"#)
            + get(r#"am_alarms_by_severity{severity="critical"}"#),
        1.0
    );
    assert_eq!(get("am_actions_in_flight"), 0.0);
    assert_eq!(get("am_recoveries_total"), 1.0);
    assert_eq!(get("am_mttr_seconds"), 9.0);
    assert_eq!(get(r#"am_executor_actions_started_total{op="reset"}"#), 1.0);
    assert_eq!(get(r#"am_executor_actions_succeeded_total{op="reset"}"#), 1.0);
    assert_eq!(get(r#"am_executor_action_seconds_total{op="reset"}"#), 1.5);
    assert_eq!(get("am_host_failures_tolerated"), 1.0);
    assert_eq!(get("am_host_failures_to_tolerate"), 1.0);
    assert!(get("am_availability_ratio") > 0.9 && get("am_availability_ratio") < 1.0);
    let types: BTreeSet<&str> = r.body.lines().filter(|l| l.starts_with("# TYPE")).collect();
    assert!(types.contains("# TYPE am_recoveries_total counter"));
    assert!(types.contains("# TYPE am_hosts gauge"));

    // OpenMetrics when asked for.
    let r = http(
        srv.addr,
        "GET",
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"],
    )
    .await;
    assert!(r.headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(r.body.ends_with("# EOF\n"));
    assert!(r.body.contains("# TYPE am_recoveries counter\n"));
    assert!(r.body.contains("am_recoveries_total 1\n"));
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let srv = start(Board::new(), None).await;
    let addr = srv.addr;
    srv.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A connection that sends nothing (or stays idle after a request) is closed after
/// `HEADER_TIMEOUT`, so idle clients cannot hold the connection slots.
#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = start(Board::new(), None).await;

    let mut silent = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let t0 = tokio::time::Instant::now();
    let n = tokio::time::timeout(std::time::Duration::from_secs(60), silent.read(&mut buf))
        .await
        .expect("closed before 60 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(t0.elapsed() >= am_api::HEADER_TIMEOUT);

    let mut kept = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let t0 = tokio::time::Instant::now();
    let read_all = tokio::time::timeout(std::time::Duration::from_secs(60), kept.read_to_end(&mut raw))
        .await
        .expect("closed before 60 s");
    let _ = read_all;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        t0.elapsed() >= am_api::HEADER_TIMEOUT,
        "kept alive until the timeout"
    );
    srv.stop().await;
}
