//! A process holding workers is SIGKILLed: its workers must not outlive it.

mod common;

use std::time::Duration;

use common::*;
use miniray::serde_json::json;
use miniray::{Error, Reactor, WorkerOptions};

#[test]
fn workers_die_within_two_seconds_of_their_parent() {
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
            let mut inner = Reactor::new()?;
            let mut pids = Vec::new();
            for _ in 0..8 {
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
        .recv(holder, Some(DEADLINE))
        .expect("pids")
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p.as_i64().expect("pid") as i32)
        .collect();
    assert_eq!(pids.len(), 8);
    assert!(pids.iter().all(|&p| p > 0 && is_alive(p)));

    r.kill(holder, libc::SIGKILL).expect("kill holder");
    match r.recv(holder, Some(DEADLINE)) {
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
