//! The reactor inside other event loops: a level-triggered `poll(2)` loop and
//! an edge-triggered mio loop, including work stranded in the reactor's queue;
//! the one stream of `wait_events` (workers, servers, user sources) and how
//! it meets `wait_any`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::DEADLINE;
use miniray::{Error, Interest, Reactor, Token, WorkerOptions};
use miniray::{Event, ServerEvent, ServerOptions};
use serde_json::{json, Value};

/// A worker that answers one request with `n` replies written in one go, so
/// they arrive in one read and all but one wait in the reactor's queue.
fn burst_worker(r: &mut Reactor, n: usize) -> miniray::Worker {
    r.spawn_channel(&WorkerOptions::new(), move |ch| {
        if ch.recv::<Value>()?.is_some() {
            let fd = ch.as_raw_fd();
            let mut all = Vec::new();
            for i in 0..n {
                all.extend_from_slice(format!("{i}\n").as_bytes());
            }
            // One write: the parent reads every line at once.
            // SAFETY: our own buffer to our own socket.
            unsafe { libc::write(fd, all.as_ptr().cast(), all.len()) };
        }
        while ch.recv::<Value>()?.is_some() {}
        Ok(())
    })
    .expect("spawn")
}

fn poll_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert!(n >= 0, "poll failed");
    n == 1
}

#[test]
fn level_triggered_loop_wakes_for_every_stranded_reply() {
    let mut r = Reactor::new().expect("reactor");
    let fd = r.as_raw_fd();
    let w = burst_worker(&mut r, 5);
    r.send(w, &json!("go")).expect("send");
    r.flush();
    let end = Instant::now() + DEADLINE;
    let mut got: Vec<Value> = Vec::new();
    while got.len() < 5 {
        assert!(Instant::now() < end, "stuck after {got:?}");
        if !poll_readable(fd, 1000) {
            continue;
        }
        // Take one message per wake-up: the rest must keep the fd readable.
        for ready in r.wait_any(Some(Duration::ZERO)).expect("wait_any") {
            if let Some(v) = r.try_recv(ready).expect("message") {
                got.push(v);
            }
        }
    }
    assert_eq!(got, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    // Drained: after one zero poll the descriptor is quiet.
    assert!(r.wait_any(Some(Duration::ZERO)).expect("poll").is_empty());
    assert!(!poll_readable(fd, 0), "fd readable with nothing to return");
}

#[test]
fn edge_triggered_outer_mio_loop_wakes_for_every_stranded_reply() {
    let mut r = Reactor::new().expect("reactor");
    let mut outer = mio::Poll::new().expect("outer poll");
    let fd = r.as_raw_fd();
    outer
        .registry()
        .register(&mut mio::unix::SourceFd(&fd), Token(7), Interest::READABLE)
        .expect("register reactor fd");
    let mut events = mio::Events::with_capacity(8);
    let w = burst_worker(&mut r, 6);
    r.send(w, &json!("go")).expect("send");
    r.flush();
    let end = Instant::now() + DEADLINE;
    let mut got: Vec<Value> = Vec::new();
    while got.len() < 6 {
        assert!(Instant::now() < end, "stuck after {got:?}");
        outer
            .poll(&mut events, Some(Duration::from_secs(1)))
            .expect("outer poll");
        if events.is_empty() {
            continue;
        }
        // One wait_any and one message per edge.
        for ready in r.wait_any(Some(Duration::ZERO)).expect("wait_any") {
            if let Some(v) = r.try_recv(ready).expect("message") {
                got.push(v);
            }
        }
    }
    assert_eq!(got, (0..6).map(|i| json!(i)).collect::<Vec<_>>());
}

#[test]
fn reactor_whose_workers_all_closed_goes_quiet() {
    let mut r = Reactor::new().expect("reactor");
    let fd = r.as_raw_fd();
    let ws: Vec<_> = (0..3)
        .map(|_| r.spawn(|v: Value| v).expect("spawn"))
        .collect();
    for &w in &ws {
        r.close(w).expect("close");
    }
    let mut closed = 0;
    let end = Instant::now() + DEADLINE;
    while closed < ws.len() {
        assert!(Instant::now() < end, "only {closed} closed");
        if !poll_readable(fd, 1000) {
            continue;
        }
        for w in r.wait_any(Some(Duration::ZERO)).expect("wait_any") {
            match r.try_recv::<Value>(w) {
                Err(Error::Closed { status }) => {
                    assert!(status.expect("status").success());
                    closed += 1;
                }
                other => panic!("expected Closed, got {other:?}"),
            }
        }
    }
    assert!(r.is_empty());
    assert!(r.wait_any(None).expect("returns at once").is_empty());
    assert!(!poll_readable(fd, 0), "an empty reactor's fd stays quiet");
}

#[test]
fn user_sources_live_beside_workers() {
    let mut r = Reactor::new().expect("reactor");
    let (mut mine, mut theirs) = mio::net::UnixStream::pair().expect("pair");
    r.register_source(&mut mine, Token(42), Interest::READABLE)
        .expect("register");
    assert!(r
        .register_source(
            &mut theirs,
            Token(miniray::USER_TOKEN_LIMIT),
            Interest::READABLE
        )
        .is_err());
    let w = r.spawn(|v: Value| v).expect("spawn");
    theirs.write_all(b"ping").expect("write");
    let ready = r.wait_any(Some(DEADLINE)).expect("wait_any");
    assert!(ready.is_empty(), "no worker was ready");
    let events = r.take_user_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].token, Token(42));
    assert!(events[0].readable);
    // Workers still flow through the same wait.
    r.send(w, &json!(1)).expect("send");
    assert_eq!(r.wait_any(Some(DEADLINE)).expect("wait_any"), vec![w]);
    r.deregister_source(&mut mine).expect("deregister");
}

/// A server on loopback whose children answer `{"served": message}`.
fn served_server(r: &mut Reactor) -> miniray::Server {
    r.listen(
        "127.0.0.1:0",
        &ServerOptions::new(),
        |v: Value| json!({"served": v}),
    )
    .expect("listen")
}

/// A plain TCP client of a miniray server: sends one line, and later reads
/// the answer (the serving child answers on its own, whatever the reactor does).
fn tcp_client(r: &Reactor, s: miniray::Server) -> TcpStream {
    let addr = r.server_addr(s).expect("addr");
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(DEADLINE)).expect("timeout");
    c.write_all(b"\"hi\"\n").expect("write");
    c
}

fn read_answer(c: &TcpStream) -> Value {
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).expect("answer");
    serde_json::from_str(&line).expect("json answer")
}

/// What a loop over the one stream has seen so far.
#[derive(Default, Debug)]
struct Seen {
    replies: Vec<Value>,
    user: Vec<Token>,
    accepted: Option<i32>,
    exited: Option<(i32, bool)>,
}

impl Seen {
    /// Handles one item; a worker gives one message per item at most, so
    /// the rest must come back through later waits.
    fn take(&mut self, r: &mut Reactor, e: Event, client: &mut Option<TcpStream>) {
        match e {
            Event::Worker(w) => {
                if let Some(v) = r.try_recv(w).expect("message") {
                    self.replies.push(v);
                }
            }
            Event::Server(ServerEvent::Accepted { pid, .. }) => {
                assert!(self.exited.is_none(), "Exited before Accepted");
                self.accepted = Some(pid);
                let c = client.take().expect("one client");
                assert_eq!(read_answer(&c), json!({"served": "hi"}));
                // EOF: the serving child exits and is reaped.
                drop(c);
            }
            Event::Server(ServerEvent::Exited { pid, status, .. }) => {
                self.exited = Some((pid, status.is_some_and(|s| s.success())));
            }
            Event::Server(other) => panic!("unexpected {other:?}"),
            Event::User(u) => {
                assert!(u.readable);
                self.user.push(u.token);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn done(&self, replies: usize) -> bool {
        self.replies.len() == replies && !self.user.is_empty() && self.exited.is_some()
    }
}

#[test]
fn one_stream_carries_workers_servers_and_user_sources() {
    let mut r = Reactor::new().expect("reactor");
    let s = served_server(&mut r);
    let w = r.spawn(|v: Value| json!({"echo": v})).expect("spawn");
    let (mut mine, mut theirs) = mio::net::UnixStream::pair().expect("pair");
    r.register_source(&mut mine, Token(42), Interest::READABLE)
        .expect("register");
    r.send(w, &json!(1)).expect("send");
    theirs.write_all(b"ping").expect("write");
    let mut client = Some(tcp_client(&r, s));
    let mut seen = Seen::default();
    let end = Instant::now() + DEADLINE;
    let mut buf = Vec::new();
    while !seen.done(1) {
        assert!(Instant::now() < end, "stuck with {seen:?}");
        r.wait_events_into(&mut buf, Some(Duration::from_secs(1)))
            .expect("wait_events");
        for e in buf.drain(..) {
            seen.take(&mut r, e, &mut client);
        }
    }
    assert_eq!(seen.replies, vec![json!({"echo": 1})]);
    assert_eq!(seen.user, vec![Token(42)]);
    let (pid, clean) = seen.exited.expect("exited");
    assert_eq!(Some(pid), seen.accepted, "Exited names the accepted child");
    assert!(clean, "the serving child exited cleanly");
    // Everything came through the stream: nothing is left for the old calls.
    assert!(r.take_server_events().is_empty());
    assert!(r.take_user_events().is_empty());
    r.deregister_source(&mut mine).expect("deregister");
}

#[test]
fn wait_events_takes_what_wait_any_left_queued() {
    let mut r = Reactor::new().expect("reactor");
    let s = served_server(&mut r);
    let (mut mine, mut theirs) = mio::net::UnixStream::pair().expect("pair");
    r.register_source(&mut mine, Token(9), Interest::READABLE)
        .expect("register");
    theirs.write_all(b"ping").expect("write");
    let client = tcp_client(&r, s);
    // Let wait_any see the accept (and the user source) without taking them.
    let end = Instant::now() + DEADLINE;
    while r.server_connections(s).expect("connections") == 0 {
        assert!(Instant::now() < end, "never accepted");
        assert!(r
            .wait_any(Some(Duration::from_secs(1)))
            .expect("wait")
            .is_empty());
    }
    assert!(r.wait_any(Some(Duration::ZERO)).expect("poll").is_empty());
    // Announced and left: wait_any does not return for them again, but
    // wait_events returns them at once.
    let start = Instant::now();
    let events = r.wait_events(Some(DEADLINE)).expect("wait_events");
    assert!(start.elapsed() < DEADLINE, "queued events must not wait");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Server(ServerEvent::Accepted { .. }))));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::User(u) if u.token == Token(9))));
    // After wait_events took them, a new server event ends wait_any again
    // (its announcement mark was reset) and stays queued for
    // take_server_events, alone: what wait_events took is gone.
    assert_eq!(read_answer(&client), json!({"served": "hi"}));
    drop(client);
    let start = Instant::now();
    assert!(r.wait_any(Some(DEADLINE)).expect("wait_any").is_empty());
    assert!(
        start.elapsed() < DEADLINE,
        "wait_any slept through the new Exited"
    );
    let later = r.take_server_events();
    assert!(
        matches!(later.as_slice(), [ServerEvent::Exited { .. }]),
        "{later:?}"
    );
    assert!(r.take_user_events().is_empty(), "taken by wait_events");
    r.deregister_source(&mut mine).expect("deregister");
}

#[test]
fn level_triggered_loop_reads_one_stream() {
    let mut r = Reactor::new().expect("reactor");
    let fd = r.as_raw_fd();
    let s = served_server(&mut r);
    let (mut mine, mut theirs) = mio::net::UnixStream::pair().expect("pair");
    r.register_source(&mut mine, Token(5), Interest::READABLE)
        .expect("register");
    let w = burst_worker(&mut r, 5);
    theirs.write_all(b"ping").expect("write");
    let mut client = Some(tcp_client(&r, s));
    let mut seen = Seen::default();
    let mut asked = false;
    let end = Instant::now() + DEADLINE;
    while !seen.done(5) {
        assert!(Instant::now() < end, "stuck with {seen:?}");
        if seen.exited.is_some() && !asked {
            // The burst once the server's events are all in: nothing else
            // is pending in epoll then, so only the reactor's re-arming can
            // keep the descriptor readable for the replies it holds.
            r.send(w, &json!("go")).expect("send");
            r.flush();
            asked = true;
        }
        if !poll_readable(fd, 1000) {
            continue;
        }
        // The non-blocking step; one message per worker item: the rest must
        // keep the descriptor readable.
        for e in r.wait_events(Some(Duration::ZERO)).expect("wait_events") {
            seen.take(&mut r, e, &mut client);
        }
    }
    assert_eq!(seen.replies, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    assert_eq!(seen.user, vec![Token(5)]);
    assert!(seen.exited.is_some_and(|(_, clean)| clean));
    // Drained: after one empty zero wait the descriptor is quiet.
    assert!(r
        .wait_events(Some(Duration::ZERO))
        .expect("poll")
        .is_empty());
    assert!(!poll_readable(fd, 0), "fd readable with nothing to return");
    r.deregister_source(&mut mine).expect("deregister");
}

/// True while `pid` exists and is not yet a zombie.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// An echo worker whose reply already waits at its socket (the reactor's
/// descriptor is readable) when this returns, not yet read by the reactor.
fn echo_with_reply_waiting(r: &mut Reactor, fd: i32) -> miniray::Worker {
    let b = r.spawn(|v: Value| v).expect("spawn");
    r.send(b, &json!("b")).expect("send");
    r.flush();
    assert!(poll_readable(fd, 20_000), "no reply from the echo worker");
    b
}

/// A `recv` that ends in an error (here the other worker's `Closed`) after
/// it read another worker's reply must leave the descriptor readable: the
/// reply is queued for the next wait.
#[test]
fn recv_ending_in_an_error_still_signals_other_workers_replies() {
    let mut r = Reactor::new().expect("reactor");
    let fd = r.as_raw_fd();
    let a = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let _ = ch.recv::<Value>()?;
            Ok(())
        })
        .expect("spawn");
    let pid_a = r.pid(a).expect("pid");
    let b = echo_with_reply_waiting(&mut r, fd);
    r.send(a, &json!("exit")).expect("send");
    r.flush();
    assert!(
        common::wait_until(DEADLINE, || !running(pid_a)),
        "worker a did not exit"
    );
    match r.recv::<Value>(a, Some(DEADLINE)) {
        Err(Error::Closed { .. }) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(
        poll_readable(fd, 0),
        "b's reply is queued but the reactor's descriptor is not readable"
    );
    assert_eq!(r.wait_any(Some(Duration::ZERO)).expect("wait"), vec![b]);
}

/// `connect` polls the reactor while the connection opens: what it reads
/// for other workers must leave the descriptor readable.
#[test]
fn connect_signals_the_replies_it_read_for_other_workers() {
    // The kernel completes the handshake from the backlog; no accept needed.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut r = Reactor::new().expect("reactor");
    let fd = r.as_raw_fd();
    let b = echo_with_reply_waiting(&mut r, fd);
    let c = r
        .connect(addr, &miniray::ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    assert!(
        poll_readable(fd, 0),
        "b's reply is queued but the reactor's descriptor is not readable"
    );
    assert_eq!(r.wait_any(Some(Duration::ZERO)).expect("wait"), vec![b]);
    r.close(c).expect("close");
}

/// Takes every server event until one matches, within [`DEADLINE`].
fn take_until(r: &mut Reactor, want: impl Fn(&ServerEvent) -> bool) {
    let end = Instant::now() + DEADLINE;
    loop {
        let ev = r
            .wait_events(Some(Duration::from_millis(100)))
            .expect("wait_events");
        if ev.iter().any(|e| matches!(e, Event::Server(s) if want(s))) {
            break;
        }
        assert!(Instant::now() < end, "no such server event");
    }
}

/// `stop_server` and `shutdown` queue the serving children's `Exited`
/// events: the descriptor must say so.
#[test]
fn stop_server_and_shutdown_signal_the_events_they_queue() {
    for shutdown in [false, true] {
        let mut r = Reactor::new().expect("reactor");
        let fd = r.as_raw_fd();
        let s = r
            .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
            .expect("listen");
        let addr = r.server_addr(s).expect("addr");
        let _c = TcpStream::connect(addr).expect("connect");
        take_until(&mut r, |e| matches!(e, ServerEvent::Accepted { .. }));
        // Nothing is pending now.
        let _ = r.wait_events(Some(Duration::ZERO)).expect("wait_events");
        assert!(!poll_readable(fd, 0), "readable before stopping");
        if shutdown {
            r.shutdown();
        } else {
            r.stop_server(s).expect("stop");
        }
        assert!(
            poll_readable(fd, 0),
            "Exited is queued but the reactor's descriptor is not readable (shutdown: {shutdown})"
        );
        let ev = r.wait_events(Some(Duration::ZERO)).expect("wait_events");
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Server(ServerEvent::Exited { .. }))),
            "{ev:?}"
        );
    }
}
