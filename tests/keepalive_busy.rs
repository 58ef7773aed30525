//! Busy is not dead: a server that does not read for several seconds while
//! a large request fills its receive window keeps its connection under the
//! default keepalive (probes, which its kernel answers; no user timeout),
//! even with probes tuned to fire every second; only a `TCP_USER_TIMEOUT`
//! set explicitly, and shorter than the busy spell, aborts it.

mod common;

use std::time::{Duration, Instant};

use common::DEADLINE;
use miniray::{ConnectOptions, Keepalive, Reactor, ServerOptions};
use serde_json::Value;

/// How long the server's child works before it reads anything.
const BUSY: Duration = Duration::from_secs(4);

fn busy_server(r: &mut Reactor) -> std::net::SocketAddr {
    let s = r
        .listen_channel("127.0.0.1:0", &ServerOptions::new(), |ch| {
            std::thread::sleep(BUSY);
            while let Some(v) = ch.recv::<Value>()? {
                ch.send(&v.as_str().map_or(0, str::len))?;
            }
            Ok(())
        })
        .expect("listen");
    r.server_addr(s).expect("addr")
}

/// Probes after 1 s of silence, every second, one unanswered ends it.
fn eager(user_timeout: Option<Duration>) -> ConnectOptions {
    let k = Keepalive {
        idle: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        count: 1,
        user_timeout: None,
    }
    .user_timeout(user_timeout);
    ConnectOptions::new().keepalive(Some(k))
}

#[test]
fn a_busy_host_with_a_full_receive_window_is_not_declared_dead() {
    let mut r = Reactor::new().expect("reactor");
    let addr = busy_server(&mut r);
    // The default keeps keepalive on, with no user timeout.
    let default = ConnectOptions::new().keepalive_settings();
    assert_eq!(default.map(|k| k.user_timeout), Some(None));
    let big = "x".repeat(16 << 20);
    let w = r
        .connect(addr, &eager(None), Some(DEADLINE))
        .expect("connect");
    let start = Instant::now();
    r.send(w, &big).expect("send");
    let n: usize = r.recv(w, Some(DEADLINE)).expect("the busy host answers");
    assert_eq!(n, big.len());
    assert!(start.elapsed() >= BUSY, "{:?}", start.elapsed());
}

#[test]
fn an_explicit_user_timeout_shorter_than_the_busy_spell_aborts() {
    let mut r = Reactor::new().expect("reactor");
    let addr = busy_server(&mut r);
    let big = "x".repeat(16 << 20);
    let opts = eager(Some(Duration::from_secs(1)));
    let w = r.connect(addr, &opts, Some(DEADLINE)).expect("connect");
    let start = Instant::now();
    r.send(w, &big).expect("send");
    let got = r.recv::<usize>(w, Some(DEADLINE));
    assert!(got.is_err(), "aborted while the host was busy: {got:?}");
    assert!(start.elapsed() < BUSY, "{:?}", start.elapsed());
}
