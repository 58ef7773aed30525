//! Calls as tasks (issue 14): replies matched to calls per worker in order,
//! a dead worker failing exactly its calls in flight (replies already
//! received delivered first), deadlines killing the worker and naming the
//! task, remote errors in the task's place. Real workers, every child
//! reaped.

mod common;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use miniray::task::{Cause, Done, Ended, Tasks};
use miniray::{Reactor, Signal, TaskId};

/// Waits until `n` tasks are done (within [`DEADLINE`]), gathering ends.
fn wait_n(tasks: &mut Tasks<u64>, n: usize, ended: &mut Vec<Ended>) -> Vec<Done<u64>> {
    let end = Instant::now() + DEADLINE;
    let mut done = Vec::new();
    while done.len() < n {
        assert!(
            Instant::now() < end,
            "only {} of {n} done: {done:?}",
            done.len()
        );
        done.extend(tasks.wait(Some(Duration::from_millis(200))).expect("wait"));
        ended.extend(tasks.take_ended());
    }
    done
}

/// A marker file a worker creates when it reaches a request.
fn marker(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("miniray-tasks-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A worker that answers `n` with `n * 10`, except 0 (hangs after making
/// `mark`) and 13 (panics).
fn spawn(tasks: &mut Tasks<u64>, mark: PathBuf) -> miniray::Worker {
    tasks
        .reactor_mut()
        .spawn(move |n: u64| {
            if n == 0 {
                let _ = std::fs::write(&mark, b"");
                std::thread::sleep(Duration::from_secs(60));
            }
            assert!(n != 13, "thirteen is unlucky");
            n * 10
        })
        .expect("spawn")
}

#[test]
fn replies_match_calls_per_worker_in_order() {
    let mut tasks = Tasks::<u64>::new(Reactor::new().expect("reactor"));
    let ws: Vec<_> = (0..3)
        .map(|i| spawn(&mut tasks, marker(&format!("order{i}"))))
        .collect();
    let mut want = HashMap::new();
    for k in 1..=20u64 {
        for (i, &w) in ws.iter().enumerate() {
            let n = k * 100 + i as u64;
            want.insert(tasks.call(w, &n).expect("call"), (w, n * 10));
        }
    }
    assert_eq!(tasks.len(), 60);
    let done = wait_n(&mut tasks, 60, &mut Vec::new());
    for d in done {
        let (w, rep) = want.remove(&d.id).expect("each task done once");
        assert_eq!((d.worker, d.result.expect("reply")), (w, rep), "{}", d.id);
    }
    assert!(want.is_empty() && tasks.is_empty());
    assert_eq!(tasks.stray_replies(), 0);
}

#[test]
fn a_killed_worker_fails_exactly_its_calls_in_flight() {
    let mut tasks = Tasks::<u64>::new(Reactor::new().expect("reactor"));
    let mark = marker("killed");
    let w = spawn(&mut tasks, mark.clone());
    let other = spawn(&mut tasks, marker("other"));
    let pid = tasks.reactor().pid(w).expect("pid");
    let first = tasks.call(w, &1u64).expect("call");
    let hang = tasks.call(w, &0u64).expect("call");
    let queued = tasks.call(w, &2u64).expect("call");
    let elsewhere = tasks.call(other, &3u64).expect("call");
    // The worker is inside the hanging request: the first reply was written
    // before it started (replies are written before the next request runs),
    // so it has arrived, though nobody took it yet.
    assert!(
        wait_until(DEADLINE, || mark.exists()),
        "worker never reached 0"
    );
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let mut ended = Vec::new();
    let done = wait_n(&mut tasks, 4, &mut ended);
    let by_id: HashMap<TaskId, &Done<u64>> = done.iter().map(|d| (d.id, d)).collect();
    assert_eq!(by_id[&first].result.as_ref().ok(), Some(&10), "{done:?}");
    assert_eq!(by_id[&elsewhere].result.as_ref().ok(), Some(&30));
    for id in [hang, queued] {
        let err = by_id[&id]
            .result
            .as_ref()
            .expect_err("lost with the worker");
        assert!(matches!(err.cause(), Cause::WorkerLost { .. }), "{err}");
        assert!(err.cause().is_retryable());
        assert_eq!(
            err.to_string(),
            format!("{id} failed: on {w}: worker lost: killed by SIGKILL")
        );
    }
    let end = Instant::now() + DEADLINE;
    while ended.is_empty() {
        assert!(Instant::now() < end, "no end reported");
        tasks.wait(Some(Duration::from_millis(100))).expect("wait");
        ended.extend(tasks.take_ended());
    }
    assert_eq!(ended[0].worker, w);
    assert_eq!(
        ended[0].status.and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
    assert_eq!(ended[0].replies, 1);
    assert!(is_reaped(pid));
    let _ = std::fs::remove_file(mark);
}

#[test]
fn a_deadline_kills_the_worker_and_names_the_task() {
    let mut tasks = Tasks::<u64>::new(Reactor::new().expect("reactor"));
    let mark = marker("deadline");
    let w = spawn(&mut tasks, mark.clone());
    let pid = tasks.reactor().pid(w).expect("pid");
    let before = tasks.call(w, &4u64).expect("call");
    // Taken before the call: its deadline counts from the send.
    let started = Instant::now();
    let hang = tasks
        .call_with(w, &0u64, Some(Duration::from_millis(300)))
        .expect("call");
    let behind = tasks.call(w, &5u64).expect("call");
    let mut ended = Vec::new();
    let done = wait_n(&mut tasks, 3, &mut ended);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let by_id: HashMap<TaskId, &Done<u64>> = done.iter().map(|d| (d.id, d)).collect();
    assert_eq!(by_id[&before].result.as_ref().ok(), Some(&40));
    let err = by_id[&hang].result.as_ref().expect_err("deadline");
    assert!(err.cause().is_deadline(), "{err}");
    assert_eq!(
        err.to_string(),
        format!("{hang} failed: on {w}: deadline of 300ms passed; worker killed")
    );
    let err = by_id[&behind].result.as_ref().expect_err("killed");
    assert!(
        matches!(err.cause(), Cause::KilledForDeadline { task } if *task == hang),
        "{err}"
    );
    assert!(err.cause().is_retryable());
    assert!(err
        .to_string()
        .ends_with(&format!("worker killed: deadline of {hang}")));
    // The kill is SIGKILL and the worker is reaped.
    assert!(wait_until(DEADLINE, || {
        tasks.wait(Some(Duration::ZERO)).expect("wait");
        ended.extend(tasks.take_ended());
        !ended.is_empty()
    }));
    assert!(ended[0].killed_for_deadline);
    assert_eq!(
        ended[0].status.and_then(|s| s.signal()),
        Some(Signal::KILL.as_raw())
    );
    assert!(is_reaped(pid));
    let _ = std::fs::remove_file(mark);
}

#[test]
fn remote_errors_take_the_task_s_place() {
    let mut tasks = Tasks::<u64>::new(Reactor::new().expect("reactor"));
    let w = spawn(&mut tasks, marker("remote"));
    // A request the worker cannot decode: its error in that task's place,
    // and serving goes on.
    let bad = tasks.call(w, &"not a number").expect("call");
    let good = tasks.call(w, &7u64).expect("call");
    let done = wait_n(&mut tasks, 2, &mut Vec::new());
    assert_eq!(done[0].id, bad);
    let err = done[0].result.as_ref().expect_err("decode");
    assert!(
        matches!(err.cause(), Cause::Remote { kind, .. } if kind == "decode"),
        "{err}"
    );
    assert!(!err.cause().is_retryable());
    assert_eq!(
        (done[1].id, done[1].result.as_ref().ok()),
        (good, Some(&70))
    );
    // A panic: that task gets the panic's message, the one behind it the
    // worker's end.
    let panics = tasks.call(w, &13u64).expect("call");
    let behind = tasks.call(w, &1u64).expect("call");
    let done = wait_n(&mut tasks, 2, &mut Vec::new());
    assert_eq!(done[0].id, panics);
    let err = done[0].result.as_ref().expect_err("panic");
    assert!(err.to_string().contains("worker reported panic"), "{err}");
    assert!(err.to_string().contains("thirteen is unlucky"), "{err}");
    assert!(err.cause().is_retryable());
    assert_eq!(done[1].id, behind);
    let err = done[1].result.as_ref().expect_err("lost");
    assert!(
        err.to_string()
            .ends_with("worker lost: exited with 101 (panicked)"),
        "{err}"
    );
}

#[test]
fn a_reply_of_the_wrong_type_fails_its_task_only() {
    let mut tasks = Tasks::<u64>::new(Reactor::new().expect("reactor"));
    let w = tasks
        .reactor_mut()
        .spawn(|s: String| {
            if s == "word" {
                serde_json::json!("text")
            } else {
                serde_json::json!(1)
            }
        })
        .expect("spawn");
    let wrong = tasks.call(w, "word").expect("call");
    let right = tasks.call(w, "n").expect("call");
    let done = wait_n(&mut tasks, 2, &mut Vec::new());
    assert_eq!(done[0].id, wrong);
    let err = done[0].result.as_ref().expect_err("mismatch");
    assert!(matches!(err.cause(), Cause::Reply { .. }), "{err}");
    assert!(!err.cause().is_retryable());
    assert_eq!(
        (done[1].id, done[1].result.as_ref().ok()),
        (right, Some(&1))
    );
}
