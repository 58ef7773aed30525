//! Each local worker leads a process group, and ending a worker ends what
//! it started: a task's `sleep` subprocesses are gone after a deadline kill
//! (each try's), `terminate`, the drop of a busy pool, `Reactor::kill` of a
//! closure or an exec worker, a reactor's shutdown of a worker that exits on
//! EOF, and `stop_server` of a serving child. Each `sleep` carries an
//! argument no other process has, so `/proc/*/cmdline` finds exactly this
//! test's.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use miniray::pool::{Pool, PoolOptions};
use miniray::task::Cause;
use miniray::{ConnectOptions, Error, Exec, Reactor, ServerOptions, Signal, WorkerOptions};
use serde_json::Value;

/// A `sleep` argument no other process has: 300 seconds and a fraction
/// made of this process's pid and a counter.
fn marker() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "300.{}{:04}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Live (not zombie) processes running `sleep <marker>`.
fn sleepers(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A zombie's cmdline reads empty; a process gone meanwhile fails.
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_sleep = args.first().is_some_and(|a| a.ends_with(b"sleep"));
        if is_sleep && args.get(1) == Some(&marker.as_bytes()) && is_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Waits (bounded) until `n` sleepers of `marker` run.
fn wait_for_sleepers(marker: &str, n: usize) {
    assert!(
        wait_until(DEADLINE, || sleepers(marker).len() >= n),
        "{n} `sleep {marker}` never ran (found {:?})",
        sleepers(marker)
    );
}

/// Asserts that no sleeper of `marker` is left (allowing a moment for a
/// killed one to go); kills any that is, so a failing run cleans up.
fn assert_none_left(marker: &str, after: &str) {
    if wait_until(Duration::from_secs(3), || sleepers(marker).is_empty()) {
        return;
    }
    let left = sleepers(marker);
    for &pid in &left {
        // SAFETY: kill takes plain integers; these pids run our marker.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    panic!("after {after}, `sleep {marker}` still ran: {left:?}");
}

/// The process group of `pid`, from `/proc/PID/stat`.
fn pgid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = stat.rsplit(')').next().expect("fields");
    // After the name: state, ppid, pgrp.
    rest.split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .expect("pgrp")
}

/// The task: start `sleep <marker>` (it joins the worker's group), then hang.
fn start_sleep_and_hang(marker: String) -> u32 {
    let started = Command::new("sleep")
        .arg(&marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    assert!(started.is_ok(), "sleep did not start");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn deadline_kills_end_each_tries_subprocesses() {
    let m = marker();
    let opts = PoolOptions::new()
        .workers(1)
        .timeout(Duration::from_millis(1500))
        .max_retries(2);
    let mut pool: Pool<String, u32> = Pool::new(&opts, start_sleep_and_hang).expect("pool");
    let id = pool.submit(m.clone()).expect("submit");
    // Every try's sleep is seen while it runs, so the check below is not
    // passed by sleeps that never started.
    let mut seen = Vec::new();
    let end = Instant::now() + DEADLINE;
    let result = loop {
        if let Some(r) = pool.get(id, Some(Duration::from_millis(50))) {
            break r;
        }
        for pid in sleepers(&m) {
            if !seen.contains(&pid) {
                seen.push(pid);
            }
        }
        assert!(Instant::now() < end, "the task never ended");
    };
    let err = result.expect_err("the task hangs on every try");
    assert_eq!(err.tries().len(), 3, "{err}");
    assert!(
        err.tries()
            .iter()
            .all(|t| matches!(t.cause, Cause::Deadline { .. })),
        "{err}"
    );
    assert_eq!(seen.len(), 3, "one sleep per try: {seen:?}");
    assert_none_left(&m, "three deadline kills");
    drop(pool);
    assert_none_left(&m, "the pool's drop");
}

#[test]
fn terminate_ends_the_tasks_subprocesses() {
    let m = marker();
    let opts = PoolOptions::new().workers(2);
    let mut pool: Pool<String, u32> = Pool::new(&opts, start_sleep_and_hang).expect("pool");
    let a = pool.submit(m.clone()).expect("submit");
    let b = pool.submit(m.clone()).expect("submit");
    wait_for_sleepers_while(&mut pool, &m, 2);
    pool.terminate();
    for id in [a, b] {
        let err = pool
            .get(id, Some(DEADLINE))
            .expect("a result")
            .expect_err("terminated");
        assert!(matches!(err.cause(), Cause::Terminated), "{err}");
    }
    assert_none_left(&m, "terminate");
}

#[test]
fn dropping_a_busy_pool_ends_the_tasks_subprocesses() {
    let m = marker();
    let opts = PoolOptions::new().workers(2);
    let mut pool: Pool<String, u32> = Pool::new(&opts, start_sleep_and_hang).expect("pool");
    pool.submit(m.clone()).expect("submit");
    pool.submit(m.clone()).expect("submit");
    wait_for_sleepers_while(&mut pool, &m, 2);
    drop(pool);
    assert_none_left(&m, "the drop of a busy pool");
}

/// Drives the pool (its tasks are sent as it is waited on) until `n`
/// sleepers run.
fn wait_for_sleepers_while(pool: &mut Pool<String, u32>, marker: &str, n: usize) {
    let end = Instant::now() + DEADLINE;
    while sleepers(marker).len() < n {
        assert!(Instant::now() < end, "{n} `sleep {marker}` never ran");
        let _ = pool.next_done(Some(Duration::from_millis(20)));
    }
}

/// Reads the worker's events until its end (`Exited`, while something the
/// worker started still holds its socket, or `Closed`); returns its text.
fn closed(r: &mut Reactor, w: miniray::Worker) -> String {
    loop {
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Ok(_) => {}
            Err(e @ (Error::Closed { .. } | Error::Exited { .. })) => return e.to_string(),
            Err(Error::Timeout) => panic!("no Closed within {DEADLINE:?}"),
            Err(e) if e.is_message_error() => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn kill_signals_a_closure_workers_group() {
    let m = marker();
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_with(&WorkerOptions::new(), start_sleep_and_hang)
        .expect("spawn");
    let pid = r.pid(w).expect("pid");
    r.send(w, &m).expect("send");
    wait_for_sleepers(&m, 1);
    let groups: Vec<i32> = sleepers(&m).into_iter().map(pgid).collect();
    let own = pgid(pid);
    r.kill(w, Signal::KILL).expect("kill");
    assert!(closed(&mut r, w).contains("killed by SIGKILL"));
    assert_none_left(&m, "Reactor::kill");
    assert_eq!(own, pid, "the worker leads its own group");
    assert_eq!(groups, [pid], "the task's sleep is in the worker's group");
}

#[test]
fn kill_signals_an_exec_workers_group() {
    let m = marker();
    let mut r = Reactor::new().expect("reactor");
    // A shell with one sleep in the background and one in the foreground.
    let script = format!("sleep {m} & sleep {m}; wait");
    let prog = Exec::new("sh", ["-c", &script]).expect("exec");
    let w = r.spawn_exec(&WorkerOptions::new(), &prog).expect("spawn");
    let pid = r.pid(w).expect("pid");
    wait_for_sleepers(&m, 2);
    let own = pgid(pid);
    r.kill(w, Signal::TERM).expect("kill");
    assert!(closed(&mut r, w).contains("killed by SIGTERM"));
    assert_none_left(&m, "Reactor::kill of an exec worker");
    assert_eq!(own, pid, "the worker leads its own group");
}

#[test]
fn shutdown_ends_what_a_worker_leaves_behind_as_it_exits() {
    let m = marker();
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let Some(m) = ch.recv::<String>()? else {
                return Ok(());
            };
            // Started and left running: the worker exits on EOF without it.
            let _ = Command::new("sleep")
                .arg(&m)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            ch.send("started")?;
            while ch.recv::<Value>()?.is_some() {}
            Ok(())
        })
        .expect("spawn");
    r.send(w, &m).expect("send");
    let reply: String = r.recv(w, Some(DEADLINE)).expect("started");
    assert_eq!(reply, "started");
    assert_eq!(sleepers(&m).len(), 1);
    let statuses = r.shutdown();
    assert_eq!(statuses.len(), 1);
    assert!(
        statuses[0].1.is_some_and(|s| s.success()),
        "it exited on EOF: {statuses:?}"
    );
    assert_none_left(&m, "the reactor's shutdown");
}

#[test]
fn stop_server_ends_a_serving_childs_subprocesses() {
    let m = marker();
    let mut r = Reactor::new().expect("reactor");
    let s = r
        .listen("127.0.0.1:0", &ServerOptions::new(), start_sleep_and_hang)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let w = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    r.send(w, &m).expect("send");
    // The server accepts and forks only while its reactor is waited on.
    let end = Instant::now() + DEADLINE;
    while sleepers(&m).is_empty() {
        assert!(Instant::now() < end, "the serving child never ran the task");
        match r.recv::<Value>(w, Some(Duration::from_millis(20))) {
            Err(Error::Timeout) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    r.stop_server(s).expect("stop");
    assert_none_left(&m, "stop_server");
}
