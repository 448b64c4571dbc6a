//! The Redfish client against a tiny scripted HTTP server on loopback: what it sends, and every
//! way a BMC can fail (refused credentials, a wrong system, malformed or oversized answers, a
//! BMC that hangs, TLS against something that does not speak it, a change that never shows).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use am_core::PowerReading;
use am_oob::{Auth, Bmc, Failure, OobError, RedfishSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vsphere_soap::{Password, TlsMode};

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
enum Reply {
    /// Status, extra headers, body.
    Http(u16, Vec<(&'static str, String)>, String),
    /// Never answers.
    Hang,
}

fn json(status: u16, body: serde_json::Value) -> Reply {
    Reply::Http(status, vec![], body.to_string())
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// A loopback server: its base URL and every request it got.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    async fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if buf.first() == Some(&0x16) {
                            // A TLS hello: answer in plain HTTP, as a BMC's HTTP port would.
                            let _ = sock
                                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let first: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
                    if first.len() < 2 {
                        // Not HTTP (a TLS hello): close.
                        return;
                    }
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let req = Req {
                        method: first[0].to_owned(),
                        path: first[1].to_owned(),
                        headers,
                        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
                    };
                    log.lock().unwrap().push(req.clone());
                    match handler(&req) {
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Reply::Http(status, extra, body) => {
                            let mut out = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                                body.len()
                            );
                            for (k, v) in extra {
                                out.push_str(&format!("{k}: {v}\r\n"));
                            }
                            out.push_str("\r\n");
                            out.push_str(&body);
                            let _ = sock.write_all(out.as_bytes()).await;
                            let _ = sock.shutdown().await;
                        }
                    }
                });
            }
        });
        Server { url, seen }
    }

    fn seen(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }
}

const SYSTEM: &str = "/redfish/v1/Systems/1";

fn system(power: &str) -> serde_json::Value {
    serde_json::json!({
        "@odata.id": SYSTEM,
        "Id": "1",
        "PowerState": power,
        "Actions": {"#ComputerSystem.Reset": {
            "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart"]
        }}
    })
}

fn members(ids: &[&str]) -> serde_json::Value {
    let m: Vec<_> = ids
        .iter()
        .map(|i| serde_json::json!({"@odata.id": format!("/redfish/v1/Systems/{i}")}))
        .collect();
    serde_json::json!({"Members": m, "Members@odata.count": ids.len()})
}

fn settings(url: &str) -> RedfishSettings {
    let mut s = RedfishSettings::new("esx-1", url, "root", Password::new("calvin"));
    s.timeout = Duration::from_millis(800);
    s.confirm_timeout = Duration::from_secs(2);
    s.confirm_every = Duration::from_millis(50);
    s
}

/// A BMC whose system turns Off on the third read after a ForceOff, and On after `On`.
fn simulated() -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    let state = Arc::new(Mutex::new(("On".to_owned(), None::<(String, u32)>)));
    move |r: &Req| {
        let mut st = state.lock().unwrap();
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/redfish/v1/Systems") => json(200, members(&["1"])),
            ("GET", SYSTEM) => {
                if let Some((to, left)) = st.1.take() {
                    if left == 0 {
                        st.0 = to;
                    } else {
                        st.1 = Some((to, left - 1));
                    }
                }
                json(200, system(&st.0))
            }
            ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                let to = match v["ResetType"].as_str().unwrap() {
                    "ForceOff" => "Off",
                    _ => "On",
                };
                st.1 = Some((to.to_owned(), 2));
                Reply::Http(204, vec![], String::new())
            }
            _ => json(404, serde_json::json!({"error": {"message": "no such resource"}})),
        }
    }
}

#[tokio::test]
async fn it_finds_the_one_system_reads_power_and_fences_until_off() {
    let srv = Server::start(simulated()).await;
    let bmc = Bmc::new(settings(&srv.url)).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerReading::On);
    bmc.fence().await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerReading::Off);
    let seen = srv.seen();
    assert_eq!(seen[0].path, "/redfish/v1/Systems", "discovered first: {seen:?}");
    let posts: Vec<&Req> = seen.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "{seen:?}");
    assert!(posts[0].body.contains("\"ForceOff\""), "{:?}", posts[0]);
    // Basic auth on every request: root:calvin.
    assert!(
        seen.iter()
            .all(|r| r.header("authorization") == Some("Basic cm9vdDpjYWx2aW4="))
    );
    // Discovery happened once.
    assert_eq!(seen.iter().filter(|r| r.path == "/redfish/v1/Systems").count(), 1);
    // Revive of an Off system is `On`, confirmed.
    bmc.revive().await.unwrap();
    let last_post = srv.seen().into_iter().rev().find(|r| r.method == "POST").unwrap();
    assert!(last_post.body.contains("\"On\""), "{last_post:?}");
    assert_eq!(bmc.power_state().await.unwrap(), PowerReading::On);
    // An On system is revived with the configured reset type.
    bmc.revive().await.unwrap();
    let last_post = srv.seen().into_iter().rev().find(|r| r.method == "POST").unwrap();
    assert!(last_post.body.contains("\"ForceRestart\""), "{last_post:?}");
}

fn failure(e: &OobError) -> &Failure {
    e.failure().unwrap_or_else(|| panic!("no failure in {e:?}"))
}

#[tokio::test]
async fn refused_credentials_name_the_bmc_and_its_message() {
    let srv = Server::start(|_| {
        json(
            401,
            serde_json::json!({"error": {"code": "Base.1.0.NoValidSession", "message": "Invalid username or password"}}),
        )
    })
    .await;
    let mut s = settings(&srv.url);
    s.system = Some("1".into());
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("esx-1")
            && text.contains(&srv.url)
            && text.contains("HTTP 401")
            && text.contains("Invalid username or password"),
        "{text}"
    );
    assert!(!text.contains("calvin"), "{text}");
    assert!(!e.is_retryable());
    assert_eq!(e.fault(), "OobAuthRefused");
}

#[tokio::test]
async fn a_wrong_system_is_a_404_and_several_systems_need_one_named() {
    let srv = Server::start(|r| match r.path.as_str() {
        "/redfish/v1/Systems" => json(200, members(&["a", "b"])),
        _ => json(
            404,
            serde_json::json!({"error": {"message": "System nope not found"}}),
        ),
    })
    .await;
    let e = Bmc::new(settings(&srv.url))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert!(
        matches!(failure(&e), Failure::Config(m) if m.contains("2 systems") && m.contains("/redfish/v1/Systems/a")),
        "{e}"
    );
    let mut s = settings(&srv.url);
    s.system = Some("nope".into());
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(
        matches!(failure(&e), Failure::Http { status: 404, message } if message.contains("System nope not found")),
        "{e}"
    );
}

#[tokio::test]
async fn malformed_and_oversized_answers_are_refused() {
    let srv = Server::start(|r| match r.path.as_str() {
        "/redfish/v1/Systems/bad" => Reply::Http(200, vec![], "{\"PowerState\": ".into()),
        "/redfish/v1/Systems/weird" => json(200, serde_json::json!({"PowerState": "Sleeping"})),
        "/redfish/v1/Systems/none" => json(200, serde_json::json!({"Id": "none"})),
        _ => Reply::Http(200, vec![], format!("{{\"x\": \"{}\"}}", "a".repeat(4096))),
    })
    .await;
    for (system, want) in [("bad", "EOF"), ("weird", "Sleeping"), ("none", "no PowerState")] {
        let mut s = settings(&srv.url);
        s.system = Some(system.into());
        let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
        assert!(
            matches!(failure(&e), Failure::Malformed(m) if m.contains(want)),
            "{system}: {e}"
        );
    }
    let mut s = settings(&srv.url);
    s.system = Some("big".into());
    s.max_body = 1024;
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert_eq!(failure(&e), &Failure::TooLarge { limit: 1024 }, "{e}");
}

#[tokio::test]
async fn a_hanging_bmc_times_out_and_a_closed_port_is_unreachable() {
    let srv = Server::start(|_| Reply::Hang).await;
    let mut s = settings(&srv.url);
    s.system = Some("1".into());
    let t = Instant::now();
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(matches!(failure(&e), Failure::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(e.is_retryable());
    assert!(e.to_string().contains("no answer within 800ms"), "{e}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings(&format!("http://127.0.0.1:{port}"));
    s.system = Some("1".into());
    let e = Bmc::new(s).unwrap().fence().await.unwrap_err();
    assert!(matches!(failure(&e), Failure::Connect(_)), "{e}");
    assert_eq!(e.fault(), "OobUnreachable");
}

#[tokio::test]
async fn tls_against_a_server_that_does_not_speak_it_fails_as_tls() {
    let srv = Server::start(|_| json(200, system("On"))).await;
    let https = srv.url.replace("http://", "https://");
    let mut s = settings(&https);
    s.system = Some("1".into());
    s.tls = TlsMode::InsecureSkipVerify;
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(matches!(failure(&e), Failure::Tls(_)), "{e}");
    assert_eq!(e.fault(), "OobTls");
    // A CA file that does not exist is named at setup.
    let mut s = settings(&https);
    s.tls = TlsMode::CaFile("/nonexistent/ca.pem".into());
    let e = Bmc::new(s).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn a_fence_that_never_shows_off_fails_and_a_refused_reset_is_named() {
    let srv = Server::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", SYSTEM) => json(200, system("On")),
        ("POST", _) if r.body.contains("ForceOff") => Reply::Http(204, vec![], String::new()),
        _ => json(
            400,
            serde_json::json!({"error": {"message": "Can not request power off transition",
                "@Message.ExtendedInfo": [{"Message": "It is disabled via the SUSHY_EMULATOR_DISABLE_POWER_OFF option"}]}}),
        ),
    })
    .await;
    let mut s = settings(&srv.url);
    s.system = Some("1".into());
    s.confirm_timeout = Duration::from_millis(400);
    let bmc = Bmc::new(s).unwrap();
    let e = bmc.fence().await.unwrap_err();
    assert!(
        matches!(failure(&e), Failure::NotConfirmed { want: "Off", last, .. } if last == "On"),
        "{e}"
    );
    assert!(e.to_string().contains("still On after 400ms"), "{e}");
    // ForceRestart is refused by this BMC: the refusal's message is kept.
    let e = bmc.revive().await.unwrap_err();
    assert!(
        matches!(failure(&e), Failure::Http { status: 400, message } if message.contains("disabled via")),
        "{e}"
    );
    // A reset type the system does not list is refused before anything is sent.
    let mut s = settings(&srv.url);
    s.system = Some("1".into());
    s.revive_reset = "PowerCycle".into();
    let before = srv.seen().iter().filter(|r| r.method == "POST").count();
    let e = Bmc::new(s).unwrap().revive().await.unwrap_err();
    assert!(
        matches!(failure(&e), Failure::Config(m) if m.contains("PowerCycle") && m.contains("ForceRestart")),
        "{e}"
    );
    assert_eq!(srv.seen().iter().filter(|r| r.method == "POST").count(), before);
}

#[tokio::test]
async fn sessions_log_in_once_again_when_forgotten_and_are_deleted_on_stop() {
    let tokens = Arc::new(Mutex::new(0u32));
    let t = tokens.clone();
    let srv = Server::start(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/redfish/v1/SessionService/Sessions") => {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            if v["UserName"] != "root" || v["Password"] != "calvin" {
                return json(401, serde_json::json!({"error": {"message": "bad login"}}));
            }
            let mut n = t.lock().unwrap();
            *n += 1;
            Reply::Http(
                201,
                vec![
                    ("X-Auth-Token", format!("tok-{n}")),
                    ("Location", format!("/redfish/v1/SessionService/Sessions/{n}")),
                ],
                "{}".into(),
            )
        }
        ("DELETE", _) => Reply::Http(204, vec![], String::new()),
        // The BMC forgot the first token.
        ("GET", SYSTEM) if r.header("x-auth-token") == Some("tok-2") => json(200, system("Off")),
        ("GET", SYSTEM)
            if r.header("x-auth-token") == Some("tok-1") && r.header("authorization").is_none() =>
        {
            json(401, serde_json::json!({"error": {"message": "session expired"}}))
        }
        _ => json(401, serde_json::json!({"error": {"message": "no"}})),
    })
    .await;
    let mut s = settings(&srv.url);
    s.system = Some("1".into());
    s.auth = Auth::Session;
    let bmc = Bmc::new(s).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerReading::Off);
    bmc.stop().await;
    let seen: Vec<String> = srv
        .seen()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        seen,
        vec![
            "POST /redfish/v1/SessionService/Sessions",
            "GET /redfish/v1/Systems/1",
            "POST /redfish/v1/SessionService/Sessions",
            "GET /redfish/v1/Systems/1",
            "DELETE /redfish/v1/SessionService/Sessions/2",
        ]
    );
    let deleted = srv.seen().into_iter().last().unwrap();
    assert_eq!(deleted.header("x-auth-token"), Some("tok-2"));
    // A refused login names itself.
    let mut s = settings(&srv.url);
    s.system = Some("1".into());
    s.auth = Auth::Session;
    s.password = Password::new("wrong");
    let e = Bmc::new(s).unwrap().power_state().await.unwrap_err();
    assert!(
        e.to_string().contains("HTTP 401: session login refused") && e.to_string().contains("bad login"),
        "{e}"
    );
}
