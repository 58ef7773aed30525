//! `AsyncPool` (feature `tokio`, issue 14 item 3): many futures of one pool
//! pending at once, map in input order and unordered as streams, a worker
//! SIGKILLed mid-map retried, a deadline firing with no I/O at all, the
//! driver handed over when the future holding it is dropped; under a
//! current-thread and a multi-thread runtime. Every test is bounded by
//! `tokio::time::timeout`.
#![cfg(feature = "tokio")]

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use miniray::pool::{AsyncPool, Pool, PoolOptions};
use miniray::task::Cause;
use miniray::Signal;
use tokio::time::timeout;

/// Every test's bound: generous on 2 shared cores, still short of a hang.
const BOUND: Duration = Duration::from_secs(60);

/// A pool whose task `n` sleeps `n % 10_000` milliseconds and answers
/// `n * 3` (so requests can differ beyond their sleep).
fn sleeper(opts: &PoolOptions) -> AsyncPool<u64, u64> {
    Pool::new(opts, |n: u64| {
        std::thread::sleep(Duration::from_millis(n % 10_000));
        n * 3
    })
    .expect("pool")
    .into_async()
    .expect("registered with tokio")
}

fn pids(pool: &AsyncPool<u64, u64>) -> HashSet<i32> {
    pool.workers()
        .into_iter()
        .filter_map(|w| pool.pid(w))
        .collect()
}

fn assert_all_reaped(pids: &HashSet<i32>) {
    for &pid in pids {
        assert!(
            wait_until(DEADLINE, || is_reaped(pid) && !is_alive(pid)),
            "worker {pid} left behind"
        );
    }
}

/// 100 submits pending at once in one `join_all` (per-future wakers): every
/// result right, each to its own future.
async fn many_submits_at_once() {
    let pool = sleeper(&PoolOptions::new().workers(4));
    let started = pids(&pool);
    // Uneven work (0..7 ms), so results finish out of submission order.
    let futures: Vec<_> = (0..100u64)
        .map(|n| pool.submit(n % 7 + n * 10_000))
        .collect();
    let ids: Vec<u64> = futures.iter().map(|f| f.id().get()).collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    let got = timeout(BOUND, join_all(futures))
        .await
        .expect("100 submits finished within the bound");
    for (n, r) in (0u64..).zip(got) {
        // The reply echoes the request: a result given to another future
        // would show here.
        assert_eq!(r.expect("task ok"), (n % 7 + n * 10_000) * 3, "task {n}");
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.completed, stats.failed, stats.in_flight),
        (100, 0, 0)
    );
    // `call` too, after the batch.
    let r = timeout(BOUND, pool.call(5)).await.expect("bounded");
    assert_eq!(r.expect("task ok"), 15);
    drop(pool);
    assert_all_reaped(&started);
}

#[tokio::test(flavor = "current_thread")]
async fn many_submits_at_once_current_thread() {
    many_submits_at_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_submits_at_once_multi_thread() {
    many_submits_at_once().await;
}

/// `map` yields in input order through `Stream`, `map_unordered` every item
/// once; two maps of one pool at once.
async fn maps_in_order_and_unordered() {
    let pool = sleeper(&PoolOptions::new().workers(3));
    let ordered = async {
        // Uneven work: item n sleeps (n * 7919) % 5 ms.
        let items = (0..400u64).map(|n| (n * 7919) % 5 + n * 10_000);
        let got: Vec<u64> = pool.map(items).map(|r| r.expect("task ok")).collect().await;
        let want: Vec<u64> = (0..400u64)
            .map(|n| ((n * 7919) % 5 + n * 10_000) * 3)
            .collect();
        assert_eq!(got, want, "results in input order");
    };
    let unordered = async {
        let mut stream = pool.map_unordered((0..200u64).map(|n| n % 3 + n * 10_000));
        let mut seen = HashSet::new();
        while let Some((_, r)) = stream.next().await {
            assert!(seen.insert(r.expect("task ok")), "a result came twice");
        }
        let want: HashSet<u64> = (0..200u64).map(|n| (n % 3 + n * 10_000) * 3).collect();
        assert_eq!(seen, want);
    };
    timeout(BOUND, async { tokio::join!(ordered, unordered) })
        .await
        .expect("both maps finished within the bound");
    assert_eq!(pool.stats().completed, 600);
}

#[tokio::test(flavor = "current_thread")]
async fn maps_in_order_and_unordered_current_thread() {
    maps_in_order_and_unordered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_in_order_and_unordered_multi_thread() {
    maps_in_order_and_unordered().await;
}

fn marker(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("miniray-tokio-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A worker SIGKILLed while it runs item 150 of a map: the item is retried
/// on another worker, the worker replaced, every result right and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_map_has_its_task_retried() {
    let mark = marker("kill");
    let write_to = mark.clone();
    let pool = Pool::new(&PoolOptions::new().workers(3), move |n: u64| {
        if n == 150 {
            // Written aside and renamed: the test never reads half a pid.
            let tmp = write_to.with_extension("tmp");
            let _ = std::fs::write(&tmp, std::process::id().to_string());
            let _ = std::fs::rename(&tmp, &write_to);
            std::thread::sleep(Duration::from_millis(1500));
        }
        n + 1
    })
    .expect("pool")
    .into_async()
    .expect("registered");
    let started = pids(&pool);
    let mapping = async {
        let mut got = Vec::new();
        let mut stream = pool.map(0..300u64);
        while let Some(r) = stream.next().await {
            got.push(r.expect("every task ends well, item 150 on its retry"));
        }
        got
    };
    // Kills the worker running item 150, from beside the map in the same
    // task (the pool is shared by reference).
    let killer = async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&mark) {
                let pid: i32 = text.trim().parse().expect("a pid");
                let w = pool
                    .workers()
                    .into_iter()
                    .find(|&w| pool.pid(w) == Some(pid))
                    .expect("the pid is one of the pool's workers");
                pool.kill(w, Signal::KILL).expect("kill");
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (got, killed) = timeout(BOUND, async { tokio::join!(mapping, killer) })
        .await
        .expect("the map finished within the bound");
    let _ = std::fs::remove_file(&mark);
    assert_eq!(got, (1..=300u64).collect::<Vec<_>>());
    let stats = pool.stats();
    assert_eq!(stats.retried, 1, "exactly item 150 retried: {stats:?}");
    assert_eq!(stats.replaced, 1, "the killed worker replaced: {stats:?}");
    assert!(started.contains(&killed));
    assert!(!pids(&pool).contains(&killed));
    let mut all = started;
    all.extend(pids(&pool));
    drop(pool);
    assert_all_reaped(&all);
}

/// A task that sleeps past the pool's timeout fails with `Deadline` while
/// nothing else happens: no other task, no I/O, only the driver's timer.
async fn deadline_fires_without_io() {
    let opts = PoolOptions::new()
        .workers(1)
        .max_retries(0)
        .timeout(Duration::from_secs(1));
    let pool = sleeper(&opts);
    let started = pids(&pool);
    let t0 = Instant::now();
    // 9999 ms of sleep: past the 1 s deadline, short of the bound.
    let r = timeout(BOUND, pool.call(9_999))
        .await
        .expect("the deadline fired within the bound");
    let waited = t0.elapsed();
    let err = r.expect_err("the task cannot finish in time");
    assert!(
        matches!(err.cause(), Cause::Deadline { timeout } if *timeout == Duration::from_secs(1)),
        "{err}"
    );
    // The 1 s deadline, with room for 2 noisy cores, but far below a
    // driver that noticed deadlines only on some slow periodic wake-up.
    assert!(
        waited < Duration::from_secs(3),
        "deadline seen after {waited:?}"
    );
    // The pool goes on with a fresh worker.
    let r = timeout(BOUND, pool.call(1)).await.expect("bounded");
    assert_eq!(r.expect("task ok"), 3);
    assert_eq!(pool.stats().replaced, 1);
    drop(pool);
    assert_all_reaped(&started);
}

#[tokio::test(flavor = "current_thread")]
async fn deadline_fires_without_io_current_thread() {
    deadline_fires_without_io().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_fires_without_io_multi_thread() {
    deadline_fires_without_io().await;
}

/// Tasks of a `LocalSet` share one pool: when the future that last drove
/// it is dropped unfinished, a waiting task takes over, and the dropped
/// future's task is forgotten.
#[tokio::test(flavor = "current_thread")]
async fn dropped_driver_hands_over_to_a_waiting_task() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let pool = Rc::new(sleeper(&PoolOptions::new().workers(2)));
            let shared = Rc::clone(&pool);
            let waiting = tokio::task::spawn_local(async move { shared.call(300).await });
            // Let the spawned task poll its call once: it waits now.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            {
                // A future polled after it, so the descriptor and the timer
                // hold this one's waker; then dropped unfinished.
                let mut long = pin!(pool.submit(9_999));
                std::future::poll_fn(|cx| {
                    assert!(long.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            let r = timeout(BOUND, waiting)
                .await
                .expect("the waiting task was driven to its result")
                .expect("task joined");
            assert_eq!(r.expect("task ok"), 900);
            let stats = pool.stats();
            assert_eq!(
                stats.completed, 1,
                "the dropped task's result is not counted: {stats:?}"
            );
        })
        .await;
}

/// A future dropped while its task waits in the queue: the task never runs,
/// and the pool goes on with the next one.
#[tokio::test(flavor = "current_thread")]
async fn dropped_future_forgets_its_queued_task() {
    let mark = marker("forgotten");
    let write_to = mark.clone();
    let pool = Pool::new(&PoolOptions::new().workers(1), move |n: u64| {
        if n == 7 {
            let _ = std::fs::write(&write_to, "ran");
        }
        std::thread::sleep(Duration::from_millis(n % 10_000));
        n
    })
    .expect("pool")
    .into_async()
    .expect("registered");
    let mut first = pin!(pool.submit(300));
    let queued = pool.submit(7);
    // One worker, one task in flight: `first` is sent, `queued` waits.
    std::future::poll_fn(|cx| {
        assert!(first.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    assert_eq!(pool.stats().in_flight, 1);
    drop(queued);
    let r = timeout(BOUND, first).await.expect("bounded");
    assert_eq!(r.expect("task ok"), 300);
    // The worker is free again: a later task runs at once, after the place
    // where the forgotten one was queued.
    let r = timeout(BOUND, pool.call(8)).await.expect("bounded");
    assert_eq!(r.expect("task ok"), 8);
    assert!(!mark.exists(), "the forgotten task ran");
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.failed), (2, 0), "{stats:?}");
}

/// Outside a runtime: a typed error, no panic.
#[test]
fn into_async_outside_a_runtime_is_an_error() {
    let pool = Pool::new(&PoolOptions::new().workers(1), |n: u64| n).expect("pool");
    let err = pool.into_async().expect_err("no runtime");
    assert!(err.to_string().contains("tokio"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_embedded_with_into_async_fd_gets_its_reply() {
    // Sent before the reactor is registered: `send` wrote it through, and
    // the reply wakes the `AsyncFd`.
    let mut reactor = miniray::Reactor::new().expect("reactor");
    let w = reactor.spawn(|n: u64| n + 1).expect("spawn");
    let pid = reactor.pid(w).expect("pid");
    reactor.send(w, &41u64).expect("send");
    let mut fd = reactor
        .into_async_fd()
        .map_err(|e| e.into_parts().1)
        .expect("registered");
    let reply = timeout(Duration::from_secs(60), async {
        loop {
            let mut ready = fd.readable_mut().await.expect("readable");
            let reactor = ready.get_inner_mut();
            for w in reactor.wait_any(Some(Duration::ZERO)).expect("step") {
                if let Some(n) = reactor.try_recv::<u64>(w).expect("reply") {
                    return n;
                }
            }
            ready.clear_ready();
        }
    })
    .await
    .expect("the reply within the bound");
    assert_eq!(reply, 42);
    drop(fd.into_inner());
    assert!(
        wait_until(DEADLINE, || is_reaped(pid)),
        "worker {pid} reaped after drop"
    );
}
