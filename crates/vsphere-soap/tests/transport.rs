//! The HTTP transport against servers that misbehave, each on loopback: a body over the limit
//! (announced, or chunked without a length), TLS spoken to a plain HTTP server, a server that
//! accepts and never answers, nothing listening. Each failure is told apart by its kind.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use vsphere_soap::{HttpTransport, RoundTripper, SoapRequest, TlsMode, TransportError, TransportErrorKind};

/// A server on loopback that answers every connection with `reply` (after reading the request
/// head); returns its port.
fn server(reply: impl Fn(&mut std::net::TcpStream) + Send + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = s.read(&mut buf);
            reply(&mut s);
        }
    });
    port
}

fn request(timeout: Duration) -> SoapRequest {
    SoapRequest {
        method: "RetrieveServiceContent".into(),
        action: "urn:vim25/8.0".into(),
        body: "<Envelope/>".into(),
        timeout,
        new_session: false,
    }
}

async fn call(url: &str, limit: usize, timeout: Duration) -> Result<usize, TransportError> {
    let t = HttpTransport::with_limit(url, &TlsMode::SystemRoots, Duration::from_secs(2), limit)
        .expect("a transport");
    t.round_trip(request(timeout)).await.map(|r| r.body.len())
}

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_unread() {
    let port = server(|s| {
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 419430400\r\nContent-Type: text/xml\r\n\r\n<a>");
    });
    let e = call(
        &format!("http://127.0.0.1:{port}/sdk"),
        1 << 20,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::TooLarge, "{e}");
    assert!(
        e.message.contains("419430400") && e.message.contains("RetrieveServiceContent"),
        "{e}"
    );
}

#[tokio::test]
async fn a_chunked_body_growing_over_the_limit_is_cut_off() {
    let port = server(|s| {
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/xml\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
            let _ = s.write_all(&chunk);
            if s.write_all(b"\r\n").is_err() {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
    });
    let e = call(
        &format!("http://127.0.0.1:{port}/sdk"),
        1 << 20,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::TooLarge, "{e}");
    // Under the limit, the same server is fine.
    let n = call(
        &format!("http://127.0.0.1:{port}/sdk"),
        8 << 20,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(n, 64 * 64 * 1024);
}

#[tokio::test]
async fn tls_spoken_to_a_plain_server_says_tls() {
    let port = server(|s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let e = call(
        &format!("https://127.0.0.1:{port}/sdk"),
        1 << 20,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Tls, "{e}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let port = server(|s| {
        std::thread::sleep(Duration::from_secs(3));
        let _ = s.flush();
    });
    let e = call(
        &format!("http://127.0.0.1:{port}/sdk"),
        1 << 20,
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Timeout, "{e}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = call(
        &format!("http://127.0.0.1:{port}/sdk"),
        1 << 20,
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Connect, "{e}");
}

/// A chunked answer of `n` elements of `size` bytes each under one root.
fn elements_server(n: usize, size: usize) -> u16 {
    server(move |s| {
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/xml\r\n\r\n");
        let mut send = |b: &[u8]| {
            let _ = s.write_all(format!("{:x}\r\n", b.len()).as_bytes());
            let _ = s.write_all(b);
            s.write_all(b"\r\n").is_ok()
        };
        send(b"<Envelope><Body><R><version>7</version>");
        let element = format!("<e>{}</e>", "x".repeat(size - 7));
        for _ in 0..n {
            if !send(element.as_bytes()) {
                return;
            }
        }
        send(b"</R></Body></Envelope>");
        let _ = s.write_all(b"0\r\n\r\n");
    })
}

async fn split_call(port: u16, limit: usize) -> (Result<String, TransportError>, usize) {
    let t = HttpTransport::with_limit(
        &format!("http://127.0.0.1:{port}/sdk"),
        &TlsMode::SystemRoots,
        Duration::from_secs(2),
        limit,
    )
    .expect("a transport");
    let mut seen = 0;
    let mut sink = |b: &[u8]| {
        seen += usize::from(b.starts_with(b"<e>") && b.ends_with(b"</e>"));
        true
    };
    let mut split = vsphere_soap::split::Splitter::new(&["Envelope", "Body", "R", "e"], limit, &mut sink);
    let res = t
        .round_trip_split(request(Duration::from_secs(5)), &mut split)
        .await
        .map(|r| String::from_utf8_lossy(&r.body).into_owned());
    drop(split);
    (res, seen)
}

#[tokio::test]
async fn a_split_answer_is_limited_per_element_not_in_all() {
    // 4 MiB in 4,096 elements of 1 KiB, read under a 1 MiB limit: every element handed on, the
    // rest kept.
    let (res, seen) = split_call(elements_server(4096, 1024), 1 << 20).await;
    assert_eq!(
        res.unwrap(),
        "<Envelope><Body><R><version>7</version></R></Body></Envelope>"
    );
    assert_eq!(seen, 4096);
    // One element of 2 MiB is over it.
    let (res, _) = split_call(elements_server(1, 2 << 20), 1 << 20).await;
    let e = res.unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::TooLarge, "{e}");
    assert!(e.message.contains("Envelope/Body/R/e"), "{e}");
}
