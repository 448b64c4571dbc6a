//! Real probes, only ever to loopback or to a namespace the test makes for itself.

mod common;

use am_core::{Observation, ProbeResult, ProbeTarget, Prober, Subject};
use common::TestNet;
use probe::{Detector, IcmpProber, NetProber, Settings, SocketKind, TcpProber, Timing, TokioClock};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const T: Duration = Duration::from_millis(500);

fn host(id: &str, address: &str) -> ProbeTarget {
    ProbeTarget::Host {
        host: id.into(),
        address: address.into(),
    }
}

#[tokio::test]
async fn icmp_echo_to_loopback_answers() {
    let icmp = IcmpProber::new().expect("ICMP prober");
    eprintln!("socket kind: {:?}", icmp.kind());
    let r = icmp.probe(&host("h", "127.0.0.1"), T).await;
    assert!(r.is_reply(), "{r:?}");
    let r = icmp.probe(&host("h", "icmp:127.0.0.1"), T).await;
    assert!(r.is_reply(), "{r:?}");
    assert_eq!(icmp.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_serves_many_loopback_targets_at_once() {
    let icmp = Arc::new(IcmpProber::new().expect("ICMP prober"));
    let mut tasks = Vec::new();
    for i in 1..=250u32 {
        let icmp = icmp.clone();
        tasks.push(tokio::spawn(async move {
            let addr = format!("127.1.{}.{}", i / 100, i % 100 + 1);
            (addr.clone(), icmp.probe(&host("h", &addr), T).await)
        }));
    }
    for t in tasks {
        let (addr, r) = t.await.unwrap();
        assert!(r.is_reply(), "{addr}: {r:?}");
    }
    assert_eq!(icmp.in_flight(), 0, "no state left behind");
}

#[tokio::test]
async fn bad_addresses_are_errors_not_probes() {
    let icmp = IcmpProber::new().expect("ICMP prober");
    let r = icmp.probe(&host("h", "esx1.example.com"), T).await;
    assert!(
        matches!(&r, ProbeResult::Error(e) if e.contains("not resolved")),
        "{r:?}"
    );
    let r = icmp.probe(&host("h", "::1"), T).await;
    assert!(
        matches!(&r, ProbeResult::Error(e) if e.contains("ICMPv6")),
        "{r:?}"
    );
}

#[tokio::test]
async fn tcp_listener_opened_then_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tcp = TcpProber::new(None);
    let r = tcp.probe(&host("h", &addr), T).await;
    assert!(r.is_reply(), "{r:?}");
    let r = tcp.probe(&host("h", &format!("tcp:{addr}")), T).await;
    assert!(r.is_reply(), "{r:?}");
    drop(listener);
    let r = tcp.probe(&host("h", &addr), T).await;
    assert!(
        matches!(&r, ProbeResult::Error(e) if e.contains("refused")),
        "{r:?}"
    );
    let r = tcp.probe(&host("h", "127.0.0.1"), T).await;
    assert!(
        matches!(&r, ProbeResult::Error(e) if e.contains("no port")),
        "{r:?}"
    );
}

#[tokio::test]
async fn net_prober_dispatches_by_address_and_host_port() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = NetProber::new(Some(port));
    assert!(
        p.probe(&host("h", "127.0.0.1"), T).await.is_reply(),
        "host: TCP to host_port"
    );
    let guest = ProbeTarget::Guest {
        vm: "v".into(),
        address: "127.0.0.1".into(),
        host: None,
    };
    assert!(p.probe(&guest, T).await.is_reply(), "guest: ICMP");
    drop(listener);
    assert!(!p.probe(&host("h", "127.0.0.1"), T).await.is_reply());
}

#[tokio::test]
async fn a_target_in_a_namespace_without_a_route_out_does_not_answer() {
    let Some(net) = TestNet::create(1) else { return };
    let icmp = IcmpProber::new().expect("ICMP prober");
    let tcp = TcpProber::new(None);
    let target = host("h", &net.remote);
    let tcp_target = host("h", &format!("{}:9", net.remote));
    let r = icmp.probe(&target, T).await;
    assert_eq!(r, ProbeResult::NoReply);
    let r = tcp.probe(&tcp_target, T).await;
    assert_eq!(r, ProbeResult::NoReply);
    // Control: the same target answers once its namespace can route back to us.
    net.route_back();
    let r = icmp.probe(&target, T).await;
    assert!(r.is_reply(), "{r:?}");
    let r = tcp.probe(&tcp_target, T).await;
    assert!(
        matches!(&r, ProbeResult::Error(e) if e.contains("refused")),
        "{r:?}"
    );
    assert_eq!(icmp.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_declares_the_namespace_host_dead_and_loopback_alive() {
    let Some(net) = TestNet::create(2) else { return };
    let fast = Timing {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(100),
        detector: Detector::ConsecutiveMisses { misses: 5 },
        rise: 2,
    };
    let settings = Settings {
        hosts: fast.clone(),
        guests: fast,
        ..Settings::default()
    };
    let targets: BTreeSet<ProbeTarget> = [
        ProbeTarget::Isolation {
            address: "127.0.0.1".into(),
        },
        host("up", "127.0.0.2"),
        host("cut", &net.remote),
    ]
    .into();
    let (_targets_tx, targets_rx) = watch::channel(targets);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let prober: Arc<dyn Prober> = Arc::new(NetProber::new(None));
    let driver = tokio::spawn(probe::drive(
        prober,
        settings,
        targets_rx,
        tx,
        Arc::new(TokioClock::new()),
    ));
    let mut verdicts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while verdicts.len() < 2 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(o)) => verdicts.push(o),
            _ => panic!("no verdicts in time; got {verdicts:?}"),
        }
    }
    let find = |id: &str| {
        verdicts.iter().find_map(|o| match o {
            Observation::Liveness {
                subject: Subject::Host(h),
                alive,
                evidence,
            } if h.as_str() == id => Some((*alive, evidence.clone())),
            _ => None,
        })
    };
    let (alive, evidence) = find("up").expect("verdict on up");
    assert!(alive, "{evidence}");
    let (alive, evidence) = find("cut").expect("verdict on cut");
    assert!(!alive, "{evidence}");
    assert!(evidence.contains("never answered"), "{evidence}");
    assert!(
        evidence.contains("manager not isolated: isolation address 127.0.0.1 answered"),
        "{evidence}"
    );
    net.route_back();
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(Observation::Liveness {
            subject: Subject::Host(h),
            alive: true,
            evidence,
        })) => assert_eq!(h.as_str(), "cut", "{evidence}"),
        other => panic!("expected cut to come back, got {other:?}"),
    }
    drop(rx);
    driver.await.unwrap();
}

/// Unprivileged ping sockets, in a namespace of our own where ping_group_range allows them.
#[test]
fn icmp_uses_datagram_sockets_where_allowed() {
    let Some(net) = TestNet::create(3) else { return };
    common::ip(&[
        "netns",
        "exec",
        &net.ns,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=0 2147483647",
    ])
    .expect("sysctl in the test namespace");
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &net.ns])
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "child_pings_loopback_with_a_datagram_socket",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[tokio::test]
#[ignore = "run inside a test namespace by icmp_uses_datagram_sockets_where_allowed"]
async fn child_pings_loopback_with_a_datagram_socket() {
    let icmp = IcmpProber::new().expect("ICMP prober");
    assert_eq!(icmp.kind(), SocketKind::Datagram);
    let r = icmp.ping("127.0.0.1".parse().unwrap(), T).await;
    assert!(r.is_reply(), "{r:?}");
}

/// Without CAP_NET_RAW and outside ping_group_range, the error says what to change. The child
/// runs in a namespace of our own where ping sockets are forbidden (ping_group_range = 1 0), with
/// CAP_NET_RAW dropped by `setpriv` (util-linux): the case holds whatever the host allows.
#[test]
fn without_permission_the_error_is_clear() {
    let Some(net) = TestNet::create(4) else { return };
    common::ip(&[
        "netns",
        "exec",
        &net.ns,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=1 0",
    ])
    .expect("sysctl in the test namespace");
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns,
            "setpriv",
            "--bounding-set=-net_raw",
            "--inh-caps=-net_raw",
            "--",
        ])
        .arg(exe)
        .args(["--ignored", "--exact", "child_cannot_open_icmp", "--nocapture"])
        .output()
        .expect("ip netns exec ... setpriv (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[tokio::test]
#[ignore = "run without CAP_NET_RAW by without_permission_the_error_is_clear"]
async fn child_cannot_open_icmp() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["1", "0"],
        "run by without_permission_the_error_is_clear, where ping sockets are forbidden"
    );
    let e = IcmpProber::new().unwrap_err().to_string();
    assert!(e.contains("ICMP echo is not permitted"), "{e}");
    assert!(e.contains("net.ipv4.ping_group_range"), "{e}");
    assert!(e.contains("CAP_NET_RAW"), "{e}");
}
