//! `PoolHandle`: a pool on a thread of its own, `Send + Sync + Clone`,
//! driven from tokio tasks on a multi-thread runtime and from plain
//! threads: 200 concurrent calls each answered to its own caller, maps as
//! a stream and a blocking iterator, a worker killed mid-map, a deadline
//! with no I/O, a dropped future ending its running try (worker killed,
//! replaced, not retried) or its queued task (never run), and the last
//! handle's drop reaping every worker. Every test is bounded.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use miniray::pool::{PoolHandle, PoolOptions};
use miniray::task::Cause;
use tokio::time::timeout;

/// Every test's bound: generous on 2 shared cores, still short of a hang.
const BOUND: Duration = Duration::from_secs(60);

fn marker(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("miniray-handle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Appends this worker's pid to `path` (one line each).
fn note_pid(path: &std::path::Path) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{}", std::process::id());
    }
}

fn pids_in(path: &std::path::Path) -> HashSet<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn the_handle_is_send_sync_and_clone() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<PoolHandle<u64, u64>>();
    shareable::<PoolHandle<String, Vec<u8>>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_calls_from_spawned_tasks() {
    let opts = PoolOptions::new().workers(4).in_flight_per_worker(4);
    let pool = PoolHandle::new(&opts, |n: u64| {
        std::thread::sleep(Duration::from_micros(200 * (n % 5)));
        n * 3
    })
    .expect("pool");
    let calls: Vec<_> = (0..200u64)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { (n, pool.call(n).await) })
        })
        .collect();
    let all = timeout(BOUND, async {
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.expect("task"));
        }
        out
    })
    .await
    .expect("within the bound");
    for (n, r) in all {
        assert_eq!(r.expect("task ran"), n * 3, "call {n} got another's reply");
    }
    assert_eq!(pool.stats().completed, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_as_a_stream_and_as_a_blocking_iterator() {
    let pool = PoolHandle::new(&PoolOptions::new().workers(3).chunk_size(16), |n: u64| {
        n + 1
    })
    .expect("pool");
    let got: Vec<u64> = timeout(
        BOUND,
        pool.map_stream(0..1000u64)
            .map(|r| r.expect("ok"))
            .collect(),
    )
    .await
    .expect("within the bound");
    assert_eq!(got, (1..=1000).collect::<Vec<_>>());
    let blocking = pool.clone();
    let got = tokio::task::spawn_blocking(move || {
        blocking
            .map(0..500u64)
            .map(|r| r.expect("ok"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("thread");
    assert_eq!(got, (1..=500).collect::<Vec<_>>());
}

/// Item 150's worker is SIGKILLed from outside while it runs: the item is
/// retried elsewhere, every result right and in order.
#[test]
fn a_worker_killed_mid_map_has_its_task_retried() {
    let mark = marker("kill");
    let write_to = mark.clone();
    let pool = PoolHandle::new(&PoolOptions::new().workers(3), move |n: u64| {
        if n == 150 {
            let tmp = write_to.with_extension("tmp");
            let _ = std::fs::write(&tmp, std::process::id().to_string());
            let _ = std::fs::rename(&tmp, &write_to);
            std::thread::sleep(Duration::from_millis(1500));
        }
        n + 1
    })
    .expect("pool");
    let killer = std::thread::spawn({
        let mark = mark.clone();
        move || {
            assert!(wait_until(BOUND, || mark.exists()), "item 150 never ran");
            let pid: i32 = std::fs::read_to_string(&mark)
                .expect("pid")
                .trim()
                .parse()
                .expect("a pid");
            // SAFETY: kill(2) on a pid this process forked, not yet reaped
            // (it sleeps inside item 150).
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        }
    });
    let got: Vec<u64> = pool.map(0..300u64).map(|r| r.expect("ok")).collect();
    killer.join().expect("killer");
    let _ = std::fs::remove_file(&mark);
    assert_eq!(got, (1..=300).collect::<Vec<_>>());
    let stats = pool.stats();
    assert_eq!(stats.retried, 1, "exactly item 150 retried: {stats:?}");
    assert_eq!(stats.replaced, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_fires_with_no_io() {
    let opts = PoolOptions::new()
        .workers(1)
        .timeout(Duration::from_millis(300))
        .max_retries(0);
    let pool = PoolHandle::new(&opts, |_: u64| -> u64 {
        std::thread::sleep(Duration::from_secs(60));
        0
    })
    .expect("pool");
    let started = Instant::now();
    let err = timeout(Duration::from_secs(5), pool.call(1))
        .await
        .expect("the deadline fired in time")
        .expect_err("hung");
    assert!(matches!(err.cause(), Cause::Deadline { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `tokio::time::timeout` drops a running call's future: its try ends as a
/// deadline ends one (the worker killed, with its process group, and
/// replaced), it is not retried, and the pool serves the next call at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_running_call_ends_its_try() {
    let runs = marker("hang-runs");
    let note = runs.clone();
    let pool = PoolHandle::new(&PoolOptions::new().workers(2), move |n: u64| {
        if n == 0 {
            note_pid(&note);
            std::thread::sleep(Duration::from_secs(60));
        }
        n
    })
    .expect("pool");
    for _ in 0..2 {
        let gave_up = timeout(Duration::from_millis(300), pool.call(0)).await;
        assert!(gave_up.is_err(), "the hanging call cannot finish");
    }
    let next = timeout(Duration::from_secs(10), pool.call(1))
        .await
        .expect("the pool serves the next call")
        .expect("ok");
    assert_eq!(next, 1);
    // Each hung try's worker was killed, and no try ran again.
    let hung = pids_in(&runs);
    assert_eq!(
        hung.len(),
        2,
        "each dropped call ran exactly once: {hung:?}"
    );
    for pid in &hung {
        assert!(
            wait_until(DEADLINE, || !is_alive(*pid)),
            "worker {pid} still runs the dropped call"
        );
    }
    // The second kill's replacement may still be on its way once the next
    // call is answered (one replacement suffices for it).
    assert!(
        wait_until(DEADLINE, || pool.stats().replaced >= 2),
        "both killed workers replaced: {:?}",
        pool.stats()
    );
    let stats = pool.stats();
    assert_eq!(stats.retried, 0, "{stats:?}");
    let _ = std::fs::remove_file(&runs);
}

/// A `Pending` dropped while its task waits in the queue: the task never
/// runs.
#[test]
fn a_dropped_queued_task_never_runs() {
    let ran = marker("queued-ran");
    let note = ran.clone();
    let pool = PoolHandle::new(&PoolOptions::new().workers(1), move |n: u64| {
        if n == 0 {
            std::thread::sleep(Duration::from_millis(500));
        } else {
            note_pid(&note);
        }
        n
    })
    .expect("pool");
    let busy = pool.submit(0);
    drop(pool.submit(7)); // queued behind 0, then given up on
    assert_eq!(busy.wait().expect("ok"), 0);
    assert_eq!(pool.call_blocking(0).expect("ok"), 0);
    assert!(!ran.exists(), "the dropped task ran");
}

/// Dropping the last handle (the pool idle) closes and reaps every worker.
#[test]
fn the_last_handle_dropped_reaps_every_worker() {
    let seen = marker("reap");
    let note = seen.clone();
    let pool = PoolHandle::new(
        &PoolOptions::new().workers(3).max_tasks_per_worker(1_000),
        move |n: u64| {
            note_pid(&note);
            n
        },
    )
    .expect("pool");
    let other = pool.clone();
    let got: Vec<u64> = other.map(0..30u64).map(|r| r.expect("ok")).collect();
    assert_eq!(got.len(), 30);
    let pids = pids_in(&seen);
    assert!(!pids.is_empty());
    drop(other);
    drop(pool);
    for pid in pids {
        assert!(
            wait_until(DEADLINE, || is_reaped(pid) && !is_alive(pid)),
            "worker {pid} left behind"
        );
    }
    let _ = std::fs::remove_file(&seen);
}

/// A fallible function through a handle: an `Err` fails its own task with
/// the message, from another thread too, and the worker goes on.
#[test]
fn a_fallible_handle_fails_only_the_erring_task() {
    let pool = PoolHandle::fallible(&PoolOptions::new().workers(1), |n: u64| {
        if n == 3 {
            Err(format!("no {n}"))
        } else {
            Ok(n * 2)
        }
    })
    .expect("pool");
    let other = pool.clone();
    let got = std::thread::spawn(move || other.map(0..6u64).collect::<Vec<_>>())
        .join()
        .expect("thread");
    for (n, r) in (0u64..).zip(got) {
        match (n, r) {
            (3, Err(e)) => assert!(
                matches!(e.cause(), Cause::Remote { message, .. } if message.contains("no 3")),
                "{e}"
            ),
            (n, Ok(v)) => assert_eq!(v, n * 2),
            (n, r) => panic!("task {n}: {r:?}"),
        }
    }
    let stats = pool.stats();
    assert_eq!((stats.failed, stats.replaced), (1, 0), "{stats:?}");
}
