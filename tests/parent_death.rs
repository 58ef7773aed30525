//! A process holding workers is SIGKILLed: its workers must not outlive it.

mod common;

use std::time::Duration;

use common::*;
use miniray::{Error, Reactor, WorkerOptions};
use serde_json::{json, Value};

#[test]
fn workers_die_within_two_seconds_of_their_parent() {
    workers_die_with_parent(200);
}

/// The 10,000-worker case: `cargo test --release --test parent_death -- --ignored`.
#[test]
#[ignore = "10,000 processes: run by hand (see the README)"]
fn ten_thousand_workers_die_within_two_seconds_of_their_parent() {
    workers_die_with_parent(10_000);
}

fn workers_die_with_parent(n: usize) {
    // Orphans are re-parented to us, so we can reap them and leave nothing behind.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let mut r = Reactor::new().expect("reactor");
    // The holder: a worker that spawns workers of its own and reports their pids.
    let holder = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            miniray::raise_fd_limit().map_err(|e| Error::Io {
                op: "setrlimit",
                source: e,
            })?;
            let mut inner = Reactor::new()?;
            let mut pids = Vec::new();
            for _ in 0..n {
                // Busy workers that never read: only PDEATHSIG can end them,
                // not EOF on their socket.
                let w = inner.spawn_channel(&WorkerOptions::new(), |_ch| loop {
                    std::thread::sleep(Duration::from_secs(1));
                })?;
                pids.push(inner.pid(w).unwrap_or(0));
            }
            ch.send(&json!(pids))?;
            // Hold them until killed.
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("spawn holder");
    let pids: Vec<i32> = r
        .recv::<Value>(holder, Some(Duration::from_secs(300)))
        .expect("pids")
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p.as_i64().expect("pid") as i32)
        .collect();
    assert_eq!(pids.len(), n);
    assert!(pids.iter().all(|&p| p > 0 && is_alive(p)));

    r.kill(holder, libc::SIGKILL).expect("kill holder");
    match r.recv::<Value>(holder, Some(DEADLINE)) {
        Err(Error::Closed { .. }) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    let all_gone = wait_until(Duration::from_secs(2), || {
        pids.iter().all(|&p| !is_alive(p))
    });
    // Reap whatever was re-parented to us, dead or (on failure) alive.
    for &p in &pids {
        if is_alive(p) {
            // SAFETY: kill with plain integers, on a pid we were told about.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        unsafe { libc::waitpid(p, &mut status, 0) };
    }
    assert!(all_gone, "workers outlived their parent by 2 s");
}
