//! Worker faults: a worker that floods replies faster than they are read,
//! one that hangs past a caller's deadline, one that writes garbage, one that
//! crashes; the reactor stays responsive to the others and reports each.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::DEADLINE;
use miniray::{Error, Reactor, WorkerOptions};
use serde_json::{json, Value};

#[test]
fn flooding_worker_is_paused_not_buffered_and_others_stay_responsive() {
    let mut r = Reactor::new().expect("reactor");
    let limit = 1 << 20;
    let flood = r
        .spawn_channel(&WorkerOptions::new().max_queued(limit), |ch| {
            let line = json!("x".repeat(1000));
            let mut n = 0u64;
            loop {
                ch.send(&json!({"n": n, "pad": line}))?;
                n += 1;
            }
        })
        .expect("spawn flood");
    let calm = r.spawn(|v: Value| v).expect("spawn calm");
    // While the flood runs, the calm worker answers promptly, many times.
    let end = Instant::now() + Duration::from_secs(2);
    let mut rounds = 0;
    while Instant::now() < end {
        r.send(calm, &json!(rounds)).expect("send");
        assert_eq!(
            r.recv::<Value>(calm, Some(DEADLINE)).expect("calm reply"),
            json!(rounds)
        );
        rounds += 1;
        // The flood is held near the bound: one read chunk past it at most.
        assert!(r.queued_input(flood).expect("queued") <= limit + 256 * 1024);
    }
    assert!(rounds > 10, "only {rounds} round trips beside the flood");
    // Taking the flood's messages resumes reading; they come in order.
    for expect in 0..5000u64 {
        let v = r
            .recv::<Value>(flood, Some(DEADLINE))
            .expect("flood message");
        assert_eq!(v["n"], json!(expect));
    }
    r.kill(flood, libc::SIGKILL).expect("kill");
    loop {
        match r.recv::<Value>(flood, Some(DEADLINE)) {
            Ok(_) => {}
            Err(Error::Closed { status: Some(s) }) => {
                assert_eq!(s.signal(), Some(libc::SIGKILL));
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn hanging_worker_is_killed_after_the_callers_deadline() {
    let mut r = Reactor::new().expect("reactor");
    let hang = r
        .spawn(|v: Value| {
            if v == json!("hang") {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            v
        })
        .expect("spawn");
    r.send(hang, &json!("hang")).expect("send");
    let t = Instant::now();
    assert!(matches!(
        r.recv::<Value>(hang, Some(Duration::from_millis(300))),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(300));
    r.kill(hang, libc::SIGKILL).expect("kill after deadline");
    match r.recv::<Value>(hang, Some(DEADLINE)) {
        Err(Error::Closed { status: Some(s) }) => assert_eq!(s.signal(), Some(libc::SIGKILL)),
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn garbage_and_crashes_are_reported_per_worker() {
    let mut r = Reactor::new().expect("reactor");
    let garbage = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let fd = std::os::fd::AsRawFd::as_raw_fd(ch);
            let junk = b"\x00\xff{{{\n\x01\x02\x03\n";
            // SAFETY: writing our own buffer to our own socket.
            unsafe { libc::write(fd, junk.as_ptr().cast(), junk.len()) };
            ch.send(&json!("then sane"))?;
            while ch.recv::<Value>()?.is_some() {}
            Ok(())
        })
        .expect("spawn");
    let crash = r
        .spawn_channel(&WorkerOptions::new(), |_ch| {
            // SAFETY: abort ends this child with SIGABRT, as a crash would.
            unsafe { libc::abort() }
        })
        .expect("spawn");
    assert!(matches!(
        r.recv::<Value>(garbage, Some(DEADLINE)),
        Err(Error::Decode(_))
    ));
    assert!(matches!(
        r.recv::<Value>(garbage, Some(DEADLINE)),
        Err(Error::Decode(_))
    ));
    assert_eq!(
        r.recv::<Value>(garbage, Some(DEADLINE)).expect("sane"),
        json!("then sane")
    );
    match r.recv::<Value>(crash, Some(DEADLINE)) {
        Err(Error::Closed { status: Some(s) }) => assert_eq!(s.signal(), Some(libc::SIGABRT)),
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// A worker whose messages the caller leaves untaken must not hold up the
/// others: each wait still writes queued requests and reads replies (before,
/// `wait_any` returned the queued worker without ever polling, so another
/// worker's request was never sent).
#[test]
fn untaken_messages_of_one_worker_never_starve_another() {
    let mut r = Reactor::new().expect("reactor");
    let chatty = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            for i in 0..3 {
                ch.send(&json!(i))?;
            }
            while ch.recv::<Value>()?.is_some() {}
            Ok(())
        })
        .expect("spawn chatty");
    let echo = r.spawn(|v: Value| v).expect("spawn echo");
    let start = Instant::now();
    while r.queued_input(chatty).expect("queued") == 0 {
        assert!(start.elapsed() < DEADLINE, "chatty never spoke");
        r.wait_any(Some(Duration::from_millis(50))).expect("wait");
    }
    r.send(echo, &json!("ping")).expect("send");
    // The caller deals with `echo` only; `chatty`'s messages stay queued.
    let start = Instant::now();
    let answered = loop {
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
        let ready = r.wait_any(Some(Duration::from_millis(100))).expect("wait");
        if ready.contains(&echo) && r.try_recv::<Value>(echo).expect("recv").is_some() {
            break true;
        }
    };
    assert!(
        answered,
        "echo never answered; its request still queued: {:?} bytes",
        r.pending_output(echo)
    );
    r.shutdown();
}
