//! Readable statuses, signals and worker ids (issue 13, item 7): what a
//! person sees in a log when a worker ends. No `libc` import here on
//! purpose: `Signal` must be enough to kill a worker.

mod common;

use std::time::Duration;

use common::*;
use miniray::{Error, Reactor, Signal, WorkerOptions};
use serde_json::Value;

/// The worker's final error, reading past anything queued before it.
fn closed(r: &mut Reactor, w: miniray::Worker) -> Error {
    loop {
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Ok(_) => {}
            Err(e @ Error::Closed { .. }) => return e,
            Err(Error::Timeout) => panic!("no Closed within {DEADLINE:?}"),
            Err(e) if e.is_message_error() => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn closed_from_a_panicking_worker_says_exited_with_101_panicked() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |_ch| panic!("on purpose"))
        .expect("spawn");
    let text = closed(&mut r, w).to_string();
    assert!(
        text.contains("exited with 101") && text.contains("panicked"),
        "{text}"
    );
    assert!(!text.contains("wait_status"), "{text}");
}

#[test]
fn closed_from_a_killed_worker_says_killed_by_sigkill() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |_ch| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .expect("spawn");
    r.kill(w, Signal::KILL).expect("kill");
    let text = closed(&mut r, w).to_string();
    assert!(text.contains("killed by SIGKILL"), "{text}");
}

#[test]
fn plain_signal_numbers_still_kill() {
    // Old calls passing an i32 compile unchanged (`impl Into<Signal>`).
    let mut r = Reactor::new().expect("reactor");
    let w = r.spawn(|v: Value| v).expect("spawn");
    r.kill(w, Signal::TERM.as_raw()).expect("kill");
    let text = closed(&mut r, w).to_string();
    assert!(text.contains("killed by SIGTERM"), "{text}");
}

#[test]
fn worker_ids_are_small_distinct_and_displayed() {
    let mut r = Reactor::new().expect("reactor");
    let a = r.spawn(|v: Value| v).expect("spawn");
    let b = r.spawn(|v: Value| v).expect("spawn");
    assert_ne!(a.id(), b.id());
    for w in [a, b] {
        assert!(w.id() > 0 && w.id() < 1000, "id {} is not small", w.id());
        assert_eq!(w.to_string(), format!("worker {}", w.id()));
    }
    // Handles still compare as the same registry entry.
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
}

#[test]
fn signal_names() {
    assert_eq!(Signal::KILL.to_string(), "SIGKILL");
    assert_eq!(Signal::from_raw(Signal::INT.as_raw()), Signal::INT);
    assert_eq!(Signal::from(15), Signal::TERM);
    assert_eq!(Signal::from_raw(200).to_string(), "signal 200");
}
