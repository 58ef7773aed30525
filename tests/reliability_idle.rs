//! The server lock-out: handshakes and serving children count toward
//! `max_connections`, so silent clients could hold every slot for good.
//! `ServerOptions::idle_timeout` closes a served connection that sends no
//! complete line for that long.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use miniray::process::EXIT_IDLE;
use miniray::{ConnectOptions, Error, Exec, Reactor, ServerEvent, ServerOptions};
use serde_json::{json, Value};

const IDLE: Duration = Duration::from_millis(300);

fn silent_client(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s
}

/// True once the server closed the client (EOF within the deadline).
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0))
}

fn count(events: &[ServerEvent], f: impl Fn(&ServerEvent) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn idle_exit(e: &ServerEvent) -> bool {
    matches!(e, ServerEvent::Exited { status: Some(s), .. } if s.code() == Some(EXIT_IDLE))
}

fn echo_roundtrip(r: &mut Reactor, addr: std::net::SocketAddr) -> Result<(), Error> {
    let c = r.connect(addr, &ConnectOptions::new(), Some(DEADLINE))?;
    r.send(c, &json!("hello"))?;
    let reply = r.recv::<Value>(c, Some(DEADLINE));
    let _ = r.close(c);
    match reply {
        Ok(v) if v == json!("hello") => Ok(()),
        Ok(v) => panic!("wrong echo {v}"),
        Err(e) => Err(e),
    }
}

#[test]
fn silent_clients_are_closed_and_their_slots_served_again() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().max_connections(2).idle_timeout(IDLE);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let mut a = silent_client(addr);
    let mut b = silent_client(addr);
    events_until(&mut r, |e| {
        count(e, |e| matches!(e, ServerEvent::Accepted { .. })) == 2
    });
    // Both slots are taken: a third client is turned away meanwhile.
    let mut third = silent_client(addr);
    let events = events_until(&mut r, |e| {
        count(e, |e| matches!(e, ServerEvent::Rejected { .. })) == 1
    });
    assert!(closed_by_server(&mut third), "{events:?}");
    // The silent ones are closed after the idle limit, their children exit
    // with EXIT_IDLE...
    let events = events_until(&mut r, |e| count(e, idle_exit) == 2);
    assert_eq!(r.server_connections(s).expect("count"), 0, "{events:?}");
    assert!(closed_by_server(&mut a));
    assert!(closed_by_server(&mut b));
    // ...and a good client is served.
    echo_roundtrip(&mut r, addr).expect("served after the idle ones left");
    r.stop_server(s).expect("stop");
}

#[test]
fn without_an_idle_limit_silent_clients_lock_everyone_out() {
    // The lock-out itself (the default, kept for compatibility).
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().max_connections(2);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let _a = silent_client(addr);
    let _b = silent_client(addr);
    events_until(&mut r, |e| {
        count(e, |e| matches!(e, ServerEvent::Accepted { .. })) == 2
    });
    std::thread::sleep(IDLE * 3);
    match echo_roundtrip(&mut r, addr) {
        Err(Error::Closed { .. }) => {}
        other => panic!("expected the third client to be turned away, got {other:?}"),
    }
    let events = r.take_server_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerEvent::Rejected { .. })),
        "{events:?}"
    );
    r.stop_server(s).expect("stop");
}

#[test]
fn bytes_without_a_newline_do_not_keep_a_connection_alive() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().idle_timeout(IDLE);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let mut drip = silent_client(addr);
    drip.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    // One byte of an endless line every 50 ms: never a complete line.
    let end = Instant::now() + DEADLINE;
    let mut closed = false;
    let mut buf = [0u8; 16];
    while !closed {
        assert!(Instant::now() < end, "a dripping client was never closed");
        if drip.write_all(b"[").is_err() {
            closed = true;
        }
        match drip.read(&mut buf) {
            Ok(0) | Err(_) if closed => {}
            Ok(0) => closed = true,
            _ => {}
        }
        r.wait_any(Some(Duration::from_millis(1))).expect("wait");
    }
    events_until(&mut r, |e| count(e, idle_exit) == 1);
    r.stop_server(s).expect("stop");
}

#[test]
fn slow_answers_and_steady_clients_are_not_cut_off() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().idle_timeout(IDLE);
    // Each answer takes twice the idle limit: only waiting for input counts.
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| {
            if v == json!("slow") {
                std::thread::sleep(IDLE * 2);
            }
            v
        })
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let c = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    r.send(c, &json!("slow")).expect("send");
    assert_eq!(
        r.recv::<Value>(c, Some(DEADLINE)).expect("slow"),
        json!("slow")
    );
    // A request every third of the limit, for three limits' time.
    for i in 0..9 {
        std::thread::sleep(IDLE / 3);
        r.send(c, &json!(i)).expect("send");
        assert_eq!(r.recv::<Value>(c, Some(DEADLINE)).expect("echo"), json!(i));
    }
    let events = r.take_server_events();
    assert!(!events.iter().any(idle_exit), "{events:?}");
    r.stop_server(s).expect("stop");
}

#[test]
fn a_channel_server_sees_the_timeout_and_exits_idle() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().idle_timeout(IDLE);
    let s = r
        .listen_channel("127.0.0.1:0", &opts, |ch| {
            let first = ch.recv::<Value>();
            let timed_out = matches!(first, Err(Error::Timeout)) && ch.idle_expired();
            // Closed from now on.
            let after = ch.recv::<Value>()?;
            if timed_out && after.is_none() {
                Ok(())
            } else {
                Err(Error::Closed { status: None })
            }
        })
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let mut a = silent_client(addr);
    events_until(&mut r, |e| count(e, idle_exit) == 1);
    assert!(closed_by_server(&mut a));
    r.stop_server(s).expect("stop");
}

#[test]
fn an_infinite_idle_timeout_is_no_limit() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().idle_timeout(Duration::MAX);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let c = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    r.send(c, &json!(1)).expect("send");
    assert_eq!(r.recv::<Value>(c, Some(DEADLINE)).expect("echo"), json!(1));
    std::thread::sleep(Duration::from_millis(200));
    r.send(c, &json!(2)).expect("send");
    assert_eq!(r.recv::<Value>(c, Some(DEADLINE)).expect("echo"), json!(2));
    let events = r.take_server_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ServerEvent::Exited { .. })),
        "{events:?}"
    );
    r.stop_server(s).expect("stop");
}

#[test]
fn an_exec_server_gets_a_receive_timeout() {
    // `cat` reads the socket itself: its blocking read fails once nothing
    // came for the limit (SO_RCVTIMEO), and it exits.
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().max_connections(1).idle_timeout(IDLE);
    let s = r
        .listen_exec(
            "127.0.0.1:0",
            &opts,
            Exec::new("cat", [] as [&str; 0]).expect("exec"),
        )
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let mut a = silent_client(addr);
    events_until(&mut r, |e| {
        count(e, |e| matches!(e, ServerEvent::Exited { .. })) == 1
    });
    assert!(closed_by_server(&mut a));
    echo_roundtrip(&mut r, addr).expect("the slot is free again");
    r.stop_server(s).expect("stop");
}

#[test]
fn serve_closes_idle_clients_with_its_flag() {
    let mut child = Command::new(example("serve"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "1",
            "--idle-timeout",
            "0.3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("addr");
    let mut a = silent_client(addr);
    let closed = closed_by_server(&mut a);
    // The slot frees once serve has reaped the child: retry until then.
    let mut r = Reactor::new().expect("reactor");
    let end = Instant::now() + DEADLINE;
    let served = loop {
        match echo_roundtrip(&mut r, addr) {
            Err(Error::Closed { .. }) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => break other,
        }
    };
    // SAFETY: kill takes plain integers; the child is ours and not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut child, DEADLINE);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(closed, "silent client not closed; serve said: {err}");
    served.expect("served after the silent one was closed");
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("idle"), "{err}");
}

#[test]
fn a_zero_idle_timeout_serves_a_request_already_waiting() {
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().idle_timeout(Duration::ZERO);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    // The line is in the socket before the server even accepts: it is
    // waiting when the serving child first looks.
    let mut c = silent_client(addr);
    c.write_all(b"\"waiting\"\n").expect("write");
    let events = events_until(&mut r, |e| {
        count(e, |e| matches!(e, ServerEvent::Accepted { .. })) == 1
    });
    let mut line = String::new();
    let got = BufReader::new(&mut c).read_line(&mut line);
    assert!(
        matches!(got, Ok(n) if n > 0) && line == "\"waiting\"\n",
        "no reply to a waiting request with idle_timeout(ZERO): {got:?} {line:?} {events:?}"
    );
    // Then nothing more is waiting: the connection is closed as idle.
    assert!(closed_by_server(&mut c));
    events_until(&mut r, |e| count(e, idle_exit) == 1);
    r.stop_server(s).expect("stop");
}
