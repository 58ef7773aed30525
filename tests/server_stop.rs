//! `stop_server` ends everything the server holds: its listener, its serving
//! children, the handshakes in progress (their clients read EOF at once,
//! not at shutdown) and, with the last server, the spare descriptor.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use miniray::{Reactor, Secret, ServerEvent, ServerOptions};
use serde_json::Value;

#[test]
fn stop_server_closes_its_handshakes_and_spare_descriptor() {
    let mut r = Reactor::new().expect("reactor");
    let before = open_fds();
    let opts = ServerOptions::new()
        .secret(Secret::new(b"a shared secret of some length".to_vec()).expect("secret"))
        .auth_timeout(Duration::MAX);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let mut clients: Vec<BufReader<TcpStream>> = (0..3)
        .map(|_| {
            let c = TcpStream::connect(addr).expect("connect");
            c.set_read_timeout(Some(DEADLINE)).expect("timeout");
            BufReader::new(c)
        })
        .collect();
    // Each gets its challenge: the handshakes are in the reactor now.
    for c in &mut clients {
        let mut line = String::new();
        while line.is_empty() {
            r.wait_any(Some(Duration::from_millis(20)))
                .expect("wait_any");
            c.get_mut().set_nonblocking(true).expect("nonblocking");
            match c.read_line(&mut line) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("reading the challenge: {e}"),
            }
        }
        c.get_mut().set_nonblocking(false).expect("blocking");
        assert!(line.ends_with('\n'), "challenge {line:?}");
    }
    r.stop_server(s).expect("stop");
    // Every client reads the refusal, then EOF, within the deadline (not
    // only at shutdown).
    for c in &mut clients {
        let mut rest = Vec::new();
        match c.read_to_end(&mut rest) {
            Ok(_) => assert_eq!(rest, b"miniray-auth-v2 refused server-stopped\n"),
            other => panic!("expected the refusal and EOF after stop_server, got {other:?}"),
        }
    }
    let failed = r
        .take_server_events()
        .into_iter()
        .filter(|e| matches!(e, ServerEvent::AuthFailed { .. }))
        .count();
    assert_eq!(failed, 3, "one AuthFailed per handshake ended by the stop");
    drop(clients);
    // The listener, the handshakes and the spare descriptor are all closed.
    assert_eq!(open_fds(), before, "descriptors left after stop_server");
    // Listening again reopens the spare: a second server works.
    let s = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen again");
    assert_eq!(
        open_fds(),
        before + 2,
        "a server costs its listener and a spare"
    );
    r.stop_server(s).expect("stop");
    assert_eq!(open_fds(), before);
}
