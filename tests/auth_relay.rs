//! A rogue endpoint in the host list that relays a real server's handshake
//! to a client holding the secret, and the client's answer back, gets a
//! session it cannot use: a request it injects is refused by the server
//! (which names why and serves nothing more), a reply it forges is refused
//! by the client. Real client, real relay (threads over TCP), real server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;

use common::{middle, DEADLINE};
use miniray::{AuthFailure, ConnectOptions, Error, Reactor, Secret, ServerOptions};
use serde_json::{json, Value};

/// Which direction the relay forges bytes in, after how many lines
/// forwarded, and the bytes.
#[derive(Clone, Copy)]
enum Forge {
    /// Toward the server, after the client's `n`-th line.
    Request(usize, &'static [u8]),
    /// Toward the client, after the server's `n`-th line.
    Reply(usize, &'static [u8]),
}

/// A line of the tagged mode's shape with a tag made up: what a relay
/// without the key can write.
const FORGED_REQUEST: &[u8] = b"0123456789abcdef0123456789abcdef {\"injected\": true}\n";
const FORGED_REPLY: &[u8] = b"0123456789abcdef0123456789abcdef \"forged reply\"\n";
/// A whole record of the encrypted mode (2-byte length, 32 bytes) made up.
const FORGED_RECORD: &[u8] = b"\x00\x20AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Forwards lines from `from` to `to`; after the `after`-th line, writes a
/// forged one. Everything it forwarded goes to `seen`.
fn pump(
    from: TcpStream,
    mut to: TcpStream,
    forge: Option<(usize, &'static [u8])>,
    seen: mpsc::Sender<Vec<u8>>,
) {
    let mut r = BufReader::new(from);
    let mut n = 0;
    loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        n += 1;
        // Recorded before it is passed on: whoever reacts to it finds it
        // recorded.
        let _ = seen.send(line.clone());
        if to.write_all(&line).is_err() {
            break;
        }
        if let Some((after, bytes)) = forge {
            if n == after {
                let _ = to.write_all(bytes);
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A relay in front of `server`: its address, and what the server sent
/// through it.
fn relay(server: SocketAddr, forge: Forge) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let (to_server, to_client) = match forge {
        Forge::Request(n, bytes) => (Some((n, bytes)), None),
        Forge::Reply(n, bytes) => (None, Some((n, bytes))),
    };
    let (ignored, _) = mpsc::channel();
    let addr = middle(
        server,
        move |client, upstream| pump(client, upstream, to_server, ignored),
        move |upstream, client| pump(upstream, client, to_client, tx),
    );
    (addr, rx)
}

/// A server whose children log every request they serve to `log`.
fn logging_server(r: &mut Reactor, s: &Secret, log: &std::path::Path) -> SocketAddr {
    let log = log.to_owned();
    let opts = ServerOptions::new().secret(s.clone());
    let server = r
        .listen_channel("127.0.0.1:0", &opts, move |ch| {
            while let Some(v) = ch.recv::<Value>()? {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .map_err(|e| miniray::Error::Remote {
                        kind: "log".into(),
                        message: e.to_string(),
                    })?;
                let _ = writeln!(f, "{v}");
                ch.send(&v)?;
            }
            Ok(())
        })
        .expect("listen");
    r.server_addr(server).expect("addr")
}

fn secret() -> Secret {
    Secret::new(b"the one shared secret".to_vec()).expect("secret")
}

#[test]
fn a_request_injected_by_a_relay_is_refused_and_named_and_never_served() {
    let log = std::env::temp_dir().join(format!("miniray-relay-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut r = Reactor::new().expect("reactor");
    let server = logging_server(&mut r, &secret(), &log);
    // Client lines: 1 the answer, 2 the first request; the forged request
    // follows it.
    let (via, from_server) = relay(server, Forge::Request(2, FORGED_REQUEST));
    let opts = ConnectOptions::new().secret(secret());
    let w = r
        .connect(via, &opts, Some(DEADLINE))
        .expect("the relayed handshake passes");
    r.send(w, &json!({"n": 1})).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
        json!({"n": 1})
    );
    // The server refused the line that followed and closed: the session is
    // over for the client too, with the server's words.
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Auth {
            addr,
            reason: AuthFailure::Integrity(why),
        }) => {
            assert_eq!(addr, via);
            assert!(
                why.contains("bad-tag"),
                "the server's refusal is quoted: {why}"
            );
        }
        other => panic!("expected the session to end, got {other:?}"),
    }
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
    // The server named the injected line and served nothing after it.
    let said: Vec<Vec<u8>> = from_server.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l == b"miniray-auth-v2 refused bad-tag\n"),
        "{:?}",
        said.iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
    let served = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        served, "{\"n\":1}\n",
        "only the client's own request was served"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_reply_forged_by_a_relay_is_refused_by_the_client() {
    let log = std::env::temp_dir().join(format!("miniray-relay-reply-{}.log", std::process::id()));
    let mut r = Reactor::new().expect("reactor");
    let server = logging_server(&mut r, &secret(), &log);
    // Server lines: 1 the challenge, 2 the verdict; the forged reply
    // follows it, ahead of the real one.
    let (via, _) = relay(server, Forge::Reply(2, FORGED_REPLY));
    let opts = ConnectOptions::new().secret(secret());
    let w = r
        .connect(via, &opts, Some(DEADLINE))
        .expect("the relayed handshake passes");
    // The forged bytes may already have ended the session (they follow the
    // verdict at once): the send is then refused, and the recv says why.
    let _ = r.send(w, &json!("question"));
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Auth {
            reason: AuthFailure::Integrity(why),
            ..
        }) => assert!(why.contains("wrong tag"), "{why}"),
        other => panic!("a forged reply must not be delivered: {other:?}"),
    }
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_relay_cannot_inject_into_an_encrypted_session_either() {
    let log = std::env::temp_dir().join(format!("miniray-relay-enc-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut r = Reactor::new().expect("reactor");
    let server = logging_server(&mut r, &secret(), &log);
    let (via, _) = relay(server, Forge::Reply(2, FORGED_RECORD));
    let opts = ConnectOptions::new().secret(secret()).encrypt(true);
    let w = r
        .connect(via, &opts, Some(DEADLINE))
        .expect("the relayed handshake passes");
    // The forged bytes may already have ended the session (they follow the
    // verdict at once): the send is then refused, and the recv says why.
    let _ = r.send(w, &json!("question"));
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Auth {
            reason: AuthFailure::Integrity(why),
            ..
        }) => assert!(why.contains("does not decrypt"), "{why}"),
        other => panic!("a forged record must not be delivered: {other:?}"),
    }
    let _ = std::fs::remove_file(&log);
}
