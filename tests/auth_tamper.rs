//! An encrypted link through a proxy that flips one byte after the
//! handshake: the receiver (client or server) detects it as an error and
//! nothing tampered with is delivered.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;

use common::{events_until, middle, DEADLINE};
use miniray::{AuthFailure, ConnectOptions, Error, Reactor, Secret, ServerEvent, ServerOptions};
use serde_json::{json, Value};

/// Forwards `handshake` lines, then raw bytes, flipping the byte at
/// `flip` (counted after the handshake) if given; what it forwarded goes
/// to `seen`.
fn pump(
    from: TcpStream,
    mut to: TcpStream,
    handshake: usize,
    flip: Option<usize>,
    seen: mpsc::Sender<Vec<u8>>,
) {
    let mut r = BufReader::new(from);
    for _ in 0..handshake {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 || to.write_all(&line).is_err() {
            return;
        }
    }
    let mut at = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(f) = flip {
            if (at..at + n).contains(&f) {
                buf[f - at] ^= 0x01;
            }
        }
        at += n;
        let _ = seen.send(buf[..n].to_vec());
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A proxy in front of `server` flipping one byte going `to_server` or
/// back; returns its address and what the server sent through it.
fn tamperer(
    server: SocketAddr,
    to_server: bool,
    flip: usize,
) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let (up_flip, down_flip) = if to_server {
        (Some(flip), None)
    } else {
        (None, Some(flip))
    };
    let (ignored, _) = mpsc::channel();
    // The client's handshake is one line, the server's two.
    let addr = middle(
        server,
        move |client, upstream| pump(client, upstream, 1, up_flip, ignored),
        move |upstream, client| pump(upstream, client, 2, down_flip, tx),
    );
    (addr, rx)
}

fn secret() -> Secret {
    Secret::new(b"the encryption test's secret".to_vec()).expect("secret")
}

#[test]
fn a_flipped_byte_toward_the_client_is_an_error_and_nothing_is_delivered() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().secret(secret());
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let server = r.server_addr(s).expect("addr");
    // Inside the reply's second record (records hold 65,519 bytes).
    let (via, _) = tamperer(server, false, 70_000);
    let enc = ConnectOptions::new().secret(secret()).encrypt(true);
    let w = r.connect(via, &enc, Some(DEADLINE)).expect("connect");
    r.send(w, &json!("x".repeat(200_000))).expect("send");
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Auth {
            addr,
            reason: AuthFailure::Integrity(why),
        }) => {
            assert_eq!(addr, via);
            assert!(
                why.contains("record 1") && why.contains("does not decrypt"),
                "{why}"
            );
        }
        other => panic!("the tampered reply must not be delivered: {other:?}"),
    }
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
}

#[test]
fn a_flipped_byte_toward_the_server_is_an_error_and_nothing_is_served() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().secret(secret());
    let served = std::env::temp_dir().join(format!("miniray-tamper-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&served);
    let log = served.clone();
    let s = r
        .listen("127.0.0.1:0", &opts, move |v: Value| {
            let _ = std::fs::write(&log, v.to_string());
            v
        })
        .expect("listen");
    let server = r.server_addr(s).expect("addr");
    let (via, from_server) = tamperer(server, true, 70_000);
    let enc = ConnectOptions::new().secret(secret()).encrypt(true);
    let w = r.connect(via, &enc, Some(DEADLINE)).expect("connect");
    r.send(w, &json!("y".repeat(200_000))).expect("send");
    // The serving child refuses the session and exits with an error: the
    // client is told (the refusal cannot be authenticated, and says so).
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Auth {
            reason: AuthFailure::Integrity(why),
            ..
        }) => assert!(
            why.contains("bad-tag") && why.contains("unauthenticated"),
            "{why}"
        ),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    let events = events_until(&mut r, |e| {
        e.iter().any(|e| matches!(e, ServerEvent::Exited { .. }))
    });
    let status = events.iter().find_map(|e| match e {
        ServerEvent::Exited { status, .. } => *status,
        _ => None,
    });
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(miniray::process::EXIT_ERROR),
        "{events:?}"
    );
    assert!(!served.exists(), "nothing tampered with was served");
    let said: Vec<u8> = from_server.try_iter().flatten().collect();
    assert!(
        said.ends_with(b"miniray-auth-v2 refused bad-tag\n"),
        "{:?}",
        String::from_utf8_lossy(&said[said.len().saturating_sub(60)..])
    );
}
