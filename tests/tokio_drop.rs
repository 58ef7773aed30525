//! Dropping an `AsyncPool` with unfinished futures and streams leaves no
//! child and no zombie (feature `tokio`). A test binary of its own: it
//! counts every child of this process in `/proc`, which other tests
//! running beside it would disturb.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use miniray::pool::{Pool, PoolOptions};

/// Pids of this process's children, zombies included (`/proc/*/stat`'s
/// fourth field is the parent's pid).
fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        panic!("/proc is not readable");
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false; // gone meanwhile
            };
            // The command name may hold spaces and parentheses: parse after
            // the last ')'.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            ppid == Some(me)
        })
        .collect()
}

#[test]
fn dropping_an_async_pool_and_its_unfinished_work_leaves_no_child() {
    assert_eq!(children(), Vec::<i32>::new(), "no child before the test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let run = async {
            let pool = Pool::new(&PoolOptions::new().workers(3), |ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            })
            .expect("pool")
            .into_async()
            .expect("registered");
            // A map whose first item comes back, the rest (an hour each)
            // still running or queued when it is dropped.
            let mut map = pool.map([1, 3_600_000, 3_600_000, 3_600_000]);
            assert_eq!(map.next().await.map(|r| r.expect("task ok")), Some(1));
            // Futures polled once (so their tasks are sent), then dropped.
            let mut a = pin!(pool.submit(3_600_000));
            let mut b = pin!(pool.call(3_600_000));
            std::future::poll_fn(|cx| {
                assert!(a.as_mut().poll(cx).is_pending());
                assert!(b.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            assert!(children().len() >= 3, "the workers run: {:?}", children());
            // Everything dropped here, the pool last.
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("bounded");
    });
    drop(rt);
    let until = Instant::now() + Duration::from_secs(20);
    while !children().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        children(),
        Vec::<i32>::new(),
        "children left behind (zombies included)"
    );
}
