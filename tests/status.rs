//! Readable statuses, signals and worker ids: what a person sees in a log
//! when a worker ends, described by the kind of worker (a closure's exit
//! code is miniray's, a program's is its own). No `libc` import here on
//! purpose: `Signal` must be enough to kill a worker.

mod common;

use std::process::ExitStatus;
use std::time::Duration;

use common::*;
use miniray::process::{describe_as, ChildKind, EXIT_ERROR};
use miniray::{Error, Exec, Reactor, Signal, WorkerOptions};
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

/// The status of the worker's `Closed`.
fn status(e: &Error) -> Option<ExitStatus> {
    match e {
        Error::Closed { status } => *status,
        other => panic!("not Closed: {other}"),
    }
}

#[test]
fn a_closure_workers_exit_1_is_its_work_functions_error() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |_ch| {
            Err(Error::Timeout) // any error: the work function failed
        })
        .expect("spawn");
    let end = closed(&mut r, w);
    let s = status(&end);
    assert_eq!(s.and_then(|s| s.code()), Some(EXIT_ERROR));
    assert_eq!(
        describe_as(ChildKind::Closure, s).to_string(),
        "exited with 1 (work function returned an error)"
    );
    assert!(end.to_string().contains("work function returned an error"));
}

#[test]
fn an_exec_workers_exit_1_is_the_programs_own() {
    // Python's uncaught exception: traceback on stderr, exit status 1.
    let mut r = Reactor::new().expect("reactor");
    let prog = Exec::new("python3", ["-c", "raise ValueError('on purpose')"]).expect("exec");
    let w = r.spawn_exec(&WorkerOptions::new(), &prog).expect("spawn");
    let s = status(&closed(&mut r, w));
    assert_eq!(s.and_then(|s| s.code()), Some(1));
    let text = describe_as(ChildKind::Exec, s).to_string();
    assert_eq!(text, "exited with status 1");
    assert!(!text.contains("work function"), "{text}");
}

#[test]
fn a_signal_is_a_signal_for_both_kinds() {
    let mut r = Reactor::new().expect("reactor");
    let closure = r
        .spawn_channel(&WorkerOptions::new(), |_ch| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .expect("spawn");
    let prog = Exec::new("sleep", ["30"]).expect("exec");
    let exec = r.spawn_exec(&WorkerOptions::new(), &prog).expect("spawn");
    for (w, kind) in [(closure, ChildKind::Closure), (exec, ChildKind::Exec)] {
        r.kill(w, Signal::KILL).expect("kill");
        let s = status(&closed(&mut r, w));
        assert_eq!(describe_as(kind, s).to_string(), "killed by SIGKILL");
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
