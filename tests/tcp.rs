//! Remote workers (`Reactor::connect`) and servers (`Reactor::listen`) over
//! loopback TCP: real sockets, real forks.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::*;
use miniray::{ConnectOptions, Error, Format, Reactor, ServerEvent, ServerOptions, WorkerOptions};
use serde_json::{json, Value};

#[test]
fn remote_worker_round_trip_through_in_process_server_both_formats() {
    for format in [Format::Json, Format::Marshal] {
        let mut r = Reactor::new().expect("reactor");
        let server = r
            .listen(
                "127.0.0.1:0",
                &ServerOptions::new().format(format),
                |v: Value| json!({"echo": v}),
            )
            .expect("listen");
        let addr = r.server_addr(server).expect("addr");
        let w = r
            .connect(addr, &ConnectOptions::new().format(format), Some(DEADLINE))
            .expect("connect");
        assert!(is_nonblocking(w.fileno()) && is_cloexec(w.fileno()));
        r.send(w, &json!({"test": 123})).expect("send");
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("recv"),
            json!({"echo": {"test": 123}})
        );
        // The server reported the connection.
        let events = r.take_server_events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ServerEvent::Accepted { .. })),
            "{events:?}"
        );
        // Closing the client ends the serving child, which is reaped.
        r.close(w).expect("close");
        assert!(matches!(
            r.recv::<Value>(w, Some(DEADLINE)),
            Err(Error::Closed { status: None })
        ));
        events_until(&mut r, |e| {
            e.iter()
                .any(|e| matches!(e, ServerEvent::Exited { status: Some(s), .. } if s.success()))
        });
        assert_eq!(r.server_connections(server).expect("count"), 0);
    }
}

#[test]
fn connection_refused_is_a_clear_error() {
    // Bind then drop a listener: nothing listens on that port now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut r = Reactor::new().expect("reactor");
    match r.connect(("127.0.0.1", port), &ConnectOptions::new(), Some(DEADLINE)) {
        Err(Error::Io {
            op: "connect",
            source,
        }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected refused, got {other:?}"),
    }
    assert!(r.is_empty());
}

#[test]
fn a_thousand_remote_workers_get_their_own_echoes() {
    miniray::raise_fd_limit().expect("rlimit");
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen(
            "127.0.0.1:0",
            &ServerOptions::new().max_connections(2000),
            |v: Value| v,
        )
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let n = 1000;
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        workers.push(
            r.connect(addr, &ConnectOptions::new(), Some(DEADLINE))
                .expect("connect"),
        );
    }
    for (i, &w) in workers.iter().enumerate() {
        r.send(w, &json!({"i": i})).expect("send");
    }
    let mut left = n;
    while left > 0 {
        let ready = r.wait_any(Some(DEADLINE)).expect("wait_any");
        let _ = r.take_server_events();
        for w in ready {
            let i = workers.iter().position(|&x| x == w).expect("known");
            assert_eq!(r.try_recv(w).expect("reply"), Some(json!({"i": i})));
            left -= 1;
        }
    }
    // Dropping the reactor stops the server and reaps all 1000 children.
}

#[test]
fn client_disconnecting_mid_line_ends_its_server_child() {
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client.write_all(b"{\"half\":").expect("write");
    drop(client);
    let (mut accepted, mut exited) = (None, None);
    let events = events_until(&mut r, |e| {
        e.iter().any(|e| matches!(e, ServerEvent::Exited { .. }))
    });
    for e in events {
        match e {
            ServerEvent::Accepted { pid, .. } => accepted = Some(pid),
            ServerEvent::Exited { pid, status, .. } => exited = Some((pid, status)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let (pid, status) = exited.expect("exited");
    assert_eq!(Some(pid), accepted);
    assert!(status.expect("status").success());
    assert!(is_reaped(pid));
}

#[test]
fn server_killed_mid_stream_gives_the_client_closed() {
    let mut r = Reactor::new().expect("reactor");
    // The server runs in a worker process of ours, and reports its port.
    let host = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let mut inner = Reactor::new()?;
            let s = inner.listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)?;
            let port = inner.server_addr(s)?.port();
            ch.send(&json!(port))?;
            loop {
                inner.wait_any(None)?;
                let _ = inner.take_server_events();
            }
        })
        .expect("spawn server host");
    let port = r
        .recv::<Value>(host, Some(DEADLINE))
        .expect("port")
        .as_u64()
        .expect("u64") as u16;
    let w = r
        .connect(("127.0.0.1", port), &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    r.send(w, &json!("before")).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("echo"),
        json!("before")
    );
    r.kill(host, libc::SIGKILL).expect("kill");
    assert!(matches!(
        r.recv::<Value>(host, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
    // The serving child dies with its parent (PDEATHSIG); the client sees it.
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Closed { status: None }) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn connections_over_the_limit_are_closed_and_reported() {
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen(
            "127.0.0.1:0",
            &ServerOptions::new().max_connections(1),
            |v: Value| v,
        )
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let first = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("first");
    r.send(first, &json!(1)).expect("send");
    assert_eq!(
        r.recv::<Value>(first, Some(DEADLINE)).expect("echo"),
        json!(1)
    );
    let mut second = std::net::TcpStream::connect(addr).expect("second");
    second.set_read_timeout(Some(DEADLINE)).expect("timeout");
    events_until(&mut r, |e| {
        e.iter().any(|e| matches!(e, ServerEvent::Rejected { .. }))
    });
    let mut line = String::new();
    let n = BufReader::new(&mut second)
        .read_line(&mut line)
        .expect("read");
    assert_eq!(n, 0, "rejected connection is closed");
}

#[test]
fn emfile_on_accept_recovers_and_serves_the_next_client() {
    let mut r = Reactor::new().expect("reactor");
    let (host, port) = emfile_host(&mut r, Duration::from_millis(20));
    let addr = ("127.0.0.1", port);

    // Open clients until the server runs out of descriptors.
    let mut events = Vec::new();
    let clients = connect_until_emfile(&mut r, host, port, &mut events);
    // Free the server's descriptors: close every client; their children exit.
    drop(clients);
    // The next client is served (after the back-off), not stalled or spun on.
    let end = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < end, "server never recovered: {events:?}");
        collect(&mut r, host, &mut events, Duration::ZERO);
        if let Ok(w) = r.connect(addr, &ConnectOptions::new(), Some(DEADLINE)) {
            r.send(w, &json!("after")).expect("send");
            if let Ok(reply) = r.recv::<Value>(w, Some(Duration::from_secs(2))) {
                assert_eq!(reply, json!("after"));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r.kill(host, libc::SIGKILL).expect("kill host");
}

#[test]
fn connect_timeout_and_reset_are_reported() {
    use std::os::fd::AsRawFd;
    // A listener with a backlog of 0 that never accepts: once its queue is
    // full the kernel drops further SYNs, so a connect can only time out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // SAFETY: listen(2) on our own socket.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let addr = listener.local_addr().expect("addr");
    let _fill: Vec<_> = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    let mut r = Reactor::new().expect("reactor");
    match r.connect(
        addr,
        &ConnectOptions::new(),
        Some(Duration::from_millis(300)),
    ) {
        Err(Error::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(r.is_empty(), "a timed-out connect leaves nothing behind");

    // Reset: the peer closes with SO_LINGER 0 while we wait for a reply.
    let peer = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let w = r
        .connect(
            peer.local_addr().expect("addr"),
            &ConnectOptions::new(),
            Some(DEADLINE),
        )
        .expect("connect");
    let (conn, _) = peer.accept().expect("accept");
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(conn);
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Closed { status: None }) => {}
        other => panic!("expected Closed after reset, got {other:?}"),
    }
}

#[test]
fn untaken_server_events_do_not_make_wait_any_spin() {
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let _client = std::net::TcpStream::connect(addr).expect("connect");
    // The Accepted event ends a wait once...
    let end = Instant::now() + DEADLINE;
    while r.server_connections(server).expect("count") == 0 {
        assert!(Instant::now() < end, "never accepted");
        r.wait_any(Some(Duration::from_millis(50)))
            .expect("wait_any");
    }
    // ...but, left untaken, it does not end the next one: this wait runs
    // its full timeout (a spinning wait_any would return at once).
    let t = Instant::now();
    assert!(r
        .wait_any(Some(Duration::from_millis(200)))
        .expect("wait_any")
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(200), "returned early");
    // A new event still ends a wait.
    let _second = std::net::TcpStream::connect(addr).expect("connect");
    let t = Instant::now();
    r.wait_any(Some(DEADLINE)).expect("wait_any");
    assert!(t.elapsed() < DEADLINE);
    assert_eq!(r.take_server_events().len(), 2);
}

#[test]
fn server_handles_and_remote_workers_get_truthful_errors() {
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen(
            "127.0.0.1:0",
            &ServerOptions::new(),
            |v: Value| json!({"echo": v}),
        )
        .expect("listen");
    // Read-only questions need only a shared borrow.
    let shared: &Reactor = &r;
    let addr = shared.server_addr(server).expect("addr");
    assert_eq!(shared.server_connections(server).expect("count"), 0);

    // A remote worker's process is the server's: kill says so, and the
    // connection is untouched (not Closed).
    let w = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    match r.kill(w, libc::SIGKILL) {
        Err(Error::Io { op: "kill", source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::Unsupported, "{source}")
        }
        other => panic!("expected Io(Unsupported) from kill, got {other:?}"),
    }
    r.send(w, &json!(7)).expect("send after kill");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("recv"),
        json!({"echo": 7})
    );
    r.close(w).expect("close");
    loop {
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Err(Error::Closed { .. }) => break,
            Err(e) if e.is_message_error() => {}
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    // A stopped server, and another reactor's server, are unknown servers,
    // not unknown workers.
    let mut other = Reactor::new().expect("reactor");
    let foreign = other
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    r.stop_server(server).expect("stop");
    for s in [server, foreign] {
        assert!(matches!(r.server_addr(s), Err(Error::UnknownServer)));
        assert!(matches!(r.server_connections(s), Err(Error::UnknownServer)));
        assert!(matches!(r.stop_server(s), Err(Error::UnknownServer)));
    }
    other.stop_server(foreign).expect("stop foreign");
}

/// The serving child's spawn settings live in `ServerOptions` itself: a
/// descriptor given to `ServerOptions::keep_fd` is open in each serving
/// child, and the same descriptor is closed in the child of a server
/// without it (so the check can tell).
#[test]
fn server_options_keep_fd_reaches_each_serving_child() {
    let file = std::fs::File::open("/dev/null").expect("open");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut r = Reactor::new().expect("reactor");
    let mut ask = |opts: &ServerOptions| -> Value {
        let server = r
            .listen_channel("127.0.0.1:0", opts, move |ch| {
                while ch.recv::<Value>()?.is_some() {
                    let open = std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists();
                    ch.send(&json!(open))?;
                }
                Ok(())
            })
            .expect("listen");
        let addr = r.server_addr(server).expect("addr");
        let w = r
            .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
            .expect("connect");
        r.send(w, &json!("is it open?")).expect("send");
        let answer = r.recv(w, Some(DEADLINE)).expect("answer");
        r.stop_server(server).expect("stop");
        answer
    };
    assert_eq!(ask(&ServerOptions::new().keep_fd(fd)), json!(true));
    assert_eq!(ask(&ServerOptions::new()), json!(false));
    drop(file);
}

/// A kept descriptor that is not open fails that connection, not the
/// server: `AcceptFailed` with `BadDescriptor` naming it, the client closed.
#[test]
fn server_options_bad_keep_fd_fails_the_connection_with_bad_descriptor() {
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen(
            "127.0.0.1:0",
            &ServerOptions::new().keep_fd(-1),
            |v: Value| v,
        )
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let client = r.connect(addr, &ConnectOptions::new(), Some(DEADLINE));
    let events = events_until(&mut r, |e| {
        e.iter()
            .any(|e| matches!(e, ServerEvent::AcceptFailed { .. }))
    });
    assert!(
        events.iter().any(|e| matches!(
            e,
            ServerEvent::AcceptFailed {
                error: Error::BadDescriptor { fd: -1, .. },
                dropped: true,
                ..
            }
        )),
        "{events:?}"
    );
    if let Ok(w) = client {
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Err(Error::Closed { .. }) => {}
            other => panic!("expected Closed, got {other:?}"),
        }
    }
}
