//! An exec worker's exit is seen when it happens (its pidfd is watched from
//! spawn), even while a descendant keeps its socket open; the events say
//! which came when. Early pidfds never cost a worker its descriptors.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::*;
use miniray::{Error, Exec, Reactor, WorkerOptions};
use serde_json::{json, Value};

/// Kills a process we did not fork (a worker's background job) on drop, so
/// a failing test leaves nothing behind.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

fn exit_code(e: &Error) -> Option<i32> {
    match e {
        Error::Exited { status } | Error::Closed { status } => status.and_then(|s| s.code()),
        _ => None,
    }
}

#[test]
fn exec_worker_exit_is_reported_while_a_background_job_holds_its_socket() {
    let mut r = Reactor::new().expect("reactor");
    // The issue's case: `sh` answers and exits 3 at once; its background
    // `sleep` keeps the socket (its stdout) open for 30 s.
    let exec = Exec::new("sh", ["-c", "sleep 30 & echo $!; exit 3"]).expect("exec");
    let w = r.spawn_exec(&WorkerOptions::new(), &exec).expect("spawn");
    let sh = r.pid(w).expect("pid");
    let job = r
        .recv::<Value>(w, Some(DEADLINE))
        .expect("the job's pid")
        .as_i64()
        .expect("a number") as i32;
    let _job = KillOnDrop(job);
    // The exit is reported now, not when the job ends 30 s later.
    match r.recv::<Value>(w, Some(Duration::from_secs(10))) {
        Err(e @ Error::Exited { .. }) => assert_eq!(exit_code(&e), Some(3), "{e}"),
        other => panic!("expected Exited with status 3 within 10 s, got {other:?}"),
    }
    assert!(is_reaped(sh), "sh {sh} is reaped with the Exited event");
    assert_eq!(r.pid(w), None, "no pid once reaped");
    // A reaped pid may be reused: signalling it must be refused.
    assert!(r.kill(w, libc::SIGTERM).unwrap_err().is_closed());
    // The connection stays until its last holder goes: then Closed, same status.
    assert!(matches!(r.try_recv::<Value>(w), Ok(None)));
    // SAFETY: kill takes plain integers; the job is alive (it holds the socket).
    assert_eq!(unsafe { libc::kill(job, libc::SIGKILL) }, 0);
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(e @ Error::Closed { .. }) => assert_eq!(exit_code(&e), Some(3), "{e}"),
        other => panic!("expected Closed with status 3, got {other:?}"),
    }
    assert!(matches!(r.try_recv::<Value>(w), Err(Error::UnknownWorker)));
}

#[test]
fn messages_after_the_exit_still_arrive_in_order() {
    let mut r = Reactor::new().expect("reactor");
    // `sh` says 1 and exits 3; its background job keeps the socket, waits
    // for a line and echoes it. The job only answers what is sent after the
    // Exited event, so the order below is fixed.
    let script = "echo 1; exec 3<&0; (read -r line <&3; echo \"$line\") & exit 3";
    let exec = Exec::new("sh", ["-c", script]).expect("exec");
    let w = r.spawn_exec(&WorkerOptions::new(), &exec).expect("spawn");
    let mut events = Vec::new();
    events.push(format!("{:?}", r.recv::<Value>(w, Some(DEADLINE))));
    let exited = r.recv::<Value>(w, Some(Duration::from_secs(10)));
    events.push(format!("{exited:?}"));
    assert!(
        matches!(&exited, Err(e @ Error::Exited { .. }) if exit_code(e) == Some(3)),
        "{events:?}"
    );
    // The connection still takes messages and delivers the job's reply.
    r.send(w, &json!(2)).expect("send after the exit");
    events.push(format!("{:?}", r.recv::<Value>(w, Some(DEADLINE))));
    let closed = r.recv::<Value>(w, Some(DEADLINE));
    events.push(format!("{closed:?}"));
    assert_eq!(events[0], "Ok(Number(1))", "{events:?}");
    assert_eq!(events[2], "Ok(Number(2))", "{events:?}");
    assert!(
        matches!(&closed, Err(e @ Error::Closed { .. }) if exit_code(e) == Some(3)),
        "{events:?}"
    );
}

#[test]
fn workers_that_exit_with_their_socket_report_only_closed() {
    // The usual case: the socket closes with the process. Whichever of EOF
    // and the pidfd is seen first, the events are the messages, then Closed.
    let mut r = Reactor::new().expect("reactor");
    let mut workers = Vec::new();
    for i in 0..40 {
        let script = format!("echo {i}; echo '\"bye\"'");
        let exec = Exec::new("sh", ["-c", script.as_str()]).expect("exec");
        workers.push(r.spawn_exec(&WorkerOptions::new(), &exec).expect("spawn"));
    }
    let mut left = workers.len();
    let mut seen = vec![Vec::new(); workers.len()];
    let end = std::time::Instant::now() + DEADLINE;
    while left > 0 {
        assert!(std::time::Instant::now() < end, "events so far: {seen:?}");
        for w in r.wait_any(Some(Duration::from_millis(100))).expect("wait") {
            let i = workers.iter().position(|x| *x == w).expect("ours");
            loop {
                match r.try_recv(w) {
                    Ok(Some(v)) => seen[i].push(v),
                    Ok(None) => break,
                    Err(Error::Closed { status }) => {
                        assert_eq!(status.map(|s| s.code()), Some(Some(0)));
                        seen[i].push(json!("closed"));
                        left -= 1;
                        break;
                    }
                    Err(e) => panic!("worker {i}: unexpected {e:?} after {:?}", seen[i]),
                }
            }
        }
    }
    for (i, events) in seen.iter().enumerate() {
        assert_eq!(events, &vec![json!(i), json!("bye"), json!("closed")]);
    }
}

#[test]
fn a_paused_worker_is_reaped_at_exit_and_reports_its_data_then_closed() {
    // Reading pauses at `max_queued`; the worker writes the rest into its
    // socket buffer and exits. It is reaped at once, and its remaining lines
    // come before Closed, with no Exited between (its socket closed with it).
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new().max_queued(1024);
    let script = r#"i=0; while [ $i -lt 100 ]; do printf '{"i": %d, "pad": "%080d"}\n' $i 0; i=$((i+1)); done"#;
    let exec = Exec::new("sh", ["-c", script]).expect("exec");
    let w = r.spawn_exec(&opts, &exec).expect("spawn");
    let pid = r.pid(w).expect("pid");
    // `wait_any` returns queued work without polling; a `recv` on another,
    // quiet worker polls (and so handles the exit).
    let quiet = r.spawn(|v: Value| v).expect("spawn");
    let reaped = wait_until(DEADLINE, || {
        assert!(r
            .recv::<Value>(quiet, Some(Duration::from_millis(20)))
            .unwrap_err()
            .is_timeout());
        r.pid(w).is_none()
    });
    assert!(
        reaped,
        "the exit of a paused worker is seen when it happens"
    );
    assert!(is_reaped(pid));
    let mut got: Vec<Value> = Vec::new();
    loop {
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Ok(v) => got.push(v["i"].clone()),
            Err(Error::Closed { status }) => {
                assert_eq!(status.map(|s| s.into_raw()), Some(0));
                break;
            }
            Err(e) => panic!("unexpected {e:?} after {} messages", got.len()),
        }
    }
    assert_eq!(got, (0..100).map(|i| json!(i)).collect::<Vec<_>>());
}

#[test]
fn early_pidfds_are_given_back_when_a_spawn_runs_out_of_descriptors() {
    // In a child with a tight open-file limit, exec workers are spawned
    // until one fails: every descriptor went to a socket, none stayed with
    // an early pidfd.
    let mut r = Reactor::new().expect("reactor");
    let host = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let mut inner = Reactor::new()?;
            let exec = Exec::new("cat", [] as [&str; 0])?;
            let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
            let room = 40;
            let lim = libc::rlimit {
                rlim_cur: open + room,
                rlim_max: 20_000,
            };
            // SAFETY: a valid rlimit struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
                return Err(Error::Closed { status: None });
            }
            let mut n = 0u64;
            let failure = loop {
                match inner.spawn_exec(&WorkerOptions::new(), &exec) {
                    Ok(_) => n += 1,
                    Err(e) => break e.to_string(),
                }
                if n > 2 * room {
                    break "no failure".to_string();
                }
            };
            ch.send(&json!({"spawned": n, "room": room, "failure": failure}))
        })
        .expect("spawn host");
    let report = r.recv::<Value>(host, Some(DEADLINE)).expect("report");
    let spawned = report["spawned"].as_u64().expect("n");
    let room = report["room"].as_u64().expect("room");
    // One descriptor per worker; the last spawn needs two (a socketpair)
    // and a little slack for the readdir above.
    assert!(spawned + 3 >= room, "{report}");
    // The last spawn finds no room for its socketpair or its exec error
    // pipe: a plain EMFILE from the parent, not an exec failure.
    assert!(
        report["failure"].as_str().is_some_and(|f| {
            (f.starts_with("socketpair") || f.starts_with("pipe2")) && f.contains("os error 24")
        }),
        "{report}"
    );
    match r.recv::<Value>(host, Some(DEADLINE)) {
        Err(Error::Closed { status }) => assert_eq!(status.and_then(|s| s.code()), Some(0)),
        other => panic!("host: {other:?}"),
    }
}

/// An exec worker whose exit and EOF come in the same poll batch is reaped
/// once, and the status is recorded: `kill` after its `Closed` was queued
/// (not yet taken) says `Closed` with the real status, not `None`.
#[test]
fn kill_after_a_same_batch_exit_reports_the_real_status() {
    let mut r = Reactor::new().expect("reactor");
    let exec = Exec::new("sh", ["-c", "read x; echo 1; exit 3"]).expect("exec");
    for _ in 0..3 {
        let w = r.spawn_exec(&WorkerOptions::new(), &exec).expect("spawn");
        let pid = r.pid(w).expect("pid");
        r.send(w, &json!(1)).expect("send");
        r.flush();
        // Exit and EOF both ready before the reactor polls.
        assert!(wait_until(DEADLINE, || !is_alive(pid)), "no exit");
        assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("reply"), json!(1));
        // Only Closed is left: wait until it is queued, then ask.
        let end = std::time::Instant::now() + DEADLINE;
        while !r
            .wait_any(Some(Duration::from_millis(100)))
            .expect("wait")
            .contains(&w)
        {
            assert!(std::time::Instant::now() < end, "no Closed");
        }
        match r.kill(w, libc::SIGKILL) {
            Err(Error::Closed { status }) => {
                assert_eq!(
                    status.and_then(|s| s.code()),
                    Some(3),
                    "kill said {status:?}"
                );
            }
            other => panic!("expected Closed, got {other:?}"),
        }
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Err(e @ Error::Closed { .. }) => assert_eq!(exit_code(&e), Some(3)),
            other => panic!("expected Closed, got {other:?}"),
        }
    }
}
