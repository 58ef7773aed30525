//! `Pool` chunking and progress: fixed and automatic chunks give
//! the unchunked results in order, a panic fails only its own item, a
//! worker killed mid-map loses nothing, a 10-million-item map holds a
//! bounded window, exec pools keep one line per item, and the progress
//! callback's counts only grow and end at the exact totals.

mod common;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use miniray::pool::{Pool, PoolOptions, Progress};
use miniray::task::{Cause, RemoteKind};
use miniray::{Exec, Signal};

fn work(n: u64) -> u64 {
    n.wrapping_mul(2_654_435_761) ^ (n >> 3)
}

fn pids<Req: serde::Serialize, Rep: serde::de::DeserializeOwned>(
    pool: &Pool<Req, Rep>,
) -> HashSet<i32> {
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

#[test]
fn fixed_and_auto_chunking_give_the_unchunked_results_in_order() {
    const N: u64 = 100_000;
    let expect: Vec<u64> = (0..N).map(work).collect();
    for opts in [
        PoolOptions::new().workers(4),
        PoolOptions::new().workers(4).chunk_size(64),
        PoolOptions::new().workers(4).chunk_size_auto(),
        PoolOptions::new()
            .workers(3)
            .chunk_size(7)
            .in_flight_per_worker(3),
    ] {
        let mut pool = Pool::new(&opts, work).expect("pool");
        let got: Vec<u64> = pool
            .map(0..N)
            .collect::<Result<_, _>>()
            .expect("every task");
        assert!(got == expect, "{opts:?}: results differ");
        let mut unordered: Vec<(u64, u64)> = pool
            .map_unordered(0..1000u64)
            .map(|(id, r)| (id.get(), r.expect("task")))
            .collect();
        unordered.sort();
        assert_eq!(
            unordered,
            (0..1000u64).map(|n| (N + n, work(n))).collect::<Vec<_>>(),
            "{opts:?}"
        );
        // Submitted tasks are chunked too, each with its own result.
        let ids: Vec<_> = (0..300u64)
            .map(|n| pool.submit(n).expect("submit"))
            .collect();
        for (n, id) in (0u64..).zip(ids) {
            let r = pool.get(id, Some(DEADLINE)).expect("finished");
            assert_eq!(r.expect("ok"), work(n));
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.completed, stats.failed, stats.retried),
            (N + 1300, 0, 0),
            "{opts:?}"
        );
        let all = pids(&pool);
        drop(pool);
        assert_all_reaped(&all);
    }
}

#[test]
fn a_panic_in_one_item_of_a_chunk_fails_only_that_item() {
    let opts = PoolOptions::new().workers(2).chunk_size(100);
    let mut pool = Pool::new(&opts, |n: u64| {
        assert!(n != 555, "five five five");
        n + 1
    })
    .expect("pool");
    let mut seen = pids(&pool);
    let results: Vec<_> = pool.map(0..1000u64).collect();
    for (n, r) in (0u64..).zip(&results) {
        match r {
            Ok(v) => assert_eq!(*v, n + 1),
            Err(e) => {
                assert_eq!(n, 555, "item {n} failed: {e}");
                assert_eq!(e.tries().len(), 1, "{e}");
                assert!(
                    matches!(e.cause(), Cause::Remote { kind, message, .. }
                        if *kind == RemoteKind::Panic && message.contains("five five five")),
                    "{e}"
                );
            }
        }
    }
    assert!(results[555].is_err(), "item 555 did not fail");
    let stats = pool.stats();
    assert_eq!(stats.failed, 1, "{stats:?}");
    // The worker exits after answering the chunk with the panic: a chunk
    // sent to it meanwhile (the pool learns of the exit from the exit, not
    // from the reply) is lost with it and runs again, each task alone and
    // at no cost of a try: at most what it holds in flight (2 chunks by
    // default with chunking).
    assert!(stats.retried <= 2 * 100, "{stats:?}");
    // The worker that panicked exits after its chunk's reply and is
    // replaced (closed as it had finished its chunk: counted as recycled).
    assert!(
        wait_until(DEADLINE, || {
            pool.poll(Some(Duration::from_millis(10)));
            let s = pool.stats();
            s.replaced + s.recycled == 1 && pool.workers().len() == 2
        }),
        "{:?}",
        pool.stats()
    );
    seen.extend(pids(&pool));
    drop(pool);
    assert_all_reaped(&seen);
}

#[test]
fn a_worker_killed_mid_map_with_chunking_loses_nothing() {
    const N: u64 = 60_000;
    for opts in [
        PoolOptions::new().workers(4).chunk_size(50),
        PoolOptions::new().workers(4).chunk_size_auto(),
    ] {
        let mut pool = Pool::new(&opts, |n: u64| {
            // Slow enough that every worker always has a chunk in flight.
            let until = std::time::Instant::now() + Duration::from_micros(20);
            while std::time::Instant::now() < until {}
            work(n)
        })
        .expect("pool");
        let mut seen = pids(&pool);
        let mut map = pool.map(0..N);
        let (mut right, mut wrong, mut kills) = (0u64, 0u64, 0);
        let mut n = 0u64;
        while let Some(r) = map.next() {
            match r {
                Ok(v) if v == work(n) => right += 1,
                _ => wrong += 1,
            }
            n += 1;
            if n.is_multiple_of(15_000) {
                seen.extend(pids(map.pool()));
                let w = map.pool().workers()[kills % 4];
                map.kill(w, Signal::KILL).expect("kill");
                kills += 1;
            }
        }
        drop(map);
        assert_eq!((right, wrong), (N, 0), "{opts:?}");
        let stats = pool.stats();
        assert!(stats.retried >= 1, "{opts:?}: no chunk was lost: {stats:?}");
        assert!(stats.replaced >= 3, "{opts:?}: {stats:?}");
        assert_eq!(stats.failed, 0, "{opts:?}: {stats:?}");
        seen.extend(pids(&pool));
        drop(pool);
        assert_all_reaped(&seen);
    }
}

#[test]
fn a_worker_killed_inside_a_chunk_has_only_that_chunk_retried() {
    let mark = std::env::temp_dir().join(format!("miniray-chunks-{}-kill", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let m = mark.clone();
    let opts = PoolOptions::new().workers(3).chunk_size(50);
    let mut pool = Pool::new(&opts, move |n: u64| {
        // Item 1234's first try waits to be killed; its retry finds the
        // marker and goes on.
        if n == 1234 && std::fs::metadata(&m).is_err() {
            let aside = m.with_extension("partial");
            let _ = std::fs::write(&aside, std::process::id().to_string());
            let _ = std::fs::rename(&aside, &m);
            std::thread::sleep(Duration::from_secs(60));
        }
        work(n)
    })
    .expect("pool");
    let watch = mark.clone();
    let killer = std::thread::spawn(move || {
        let end = std::time::Instant::now() + DEADLINE;
        while std::time::Instant::now() < end {
            if let Ok(Ok(pid)) = std::fs::read_to_string(&watch).map(|t| t.parse::<i32>()) {
                // SAFETY: kill(2) on a worker of ours, busy (so unreaped).
                return unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    });
    let got: Vec<u64> = pool
        .map(0..5000u64)
        .collect::<Result<_, _>>()
        .expect("every task");
    assert!(killer.join().expect("watcher"), "item 1234 never started");
    assert!(got == (0..5000u64).map(work).collect::<Vec<_>>());
    let stats = pool.stats();
    // Only the tasks of the chunks in flight on the killed worker are tried
    // again (one worker; with chunking 2 chunks in flight by default, at
    // most 50 tasks each): never the whole map.
    assert!(
        // At least 2: the whole unanswered chunk, not one task alone.
        (2..=2 * 50).contains(&stats.retried) && stats.replaced == 1 && stats.failed == 0,
        "{stats:?}"
    );
    let _ = std::fs::remove_file(mark);
}

#[test]
fn a_deadline_in_a_chunk_ends_with_the_hanging_item_alone_to_blame() {
    // Item 5 hangs on every try. Its chunk's deadline kills the worker:
    // the chunk's tries all fail, each past its own deadline (they share
    // the chunk's), so item 5's first cause is its deadline too, not
    // another task's; each task is retried alone, so the innocent ones
    // succeed and the hanging one hits its own deadline on its retries.
    let opts = PoolOptions::new()
        .workers(2)
        .chunk_size(10)
        .max_retries(2)
        .timeout(Duration::from_millis(300));
    let mut pool = Pool::new(&opts, |n: u64| {
        if n == 5 {
            std::thread::sleep(Duration::from_secs(60));
        }
        n * 2
    })
    .expect("pool");
    let mut seen = pids(&pool);
    let results: Vec<_> = pool.map(0..40u64).collect();
    for (n, r) in (0u64..).zip(&results) {
        if n == 5 {
            let e = r.as_ref().expect_err("item 5 hangs");
            assert_eq!(e.tries().len(), 3, "{e}");
            assert!(e.cause().is_deadline(), "{e}");
            assert!(e.tries().iter().all(|t| t.cause.is_deadline()), "{e}");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&(n * 2)), "item {n}: {r:?}");
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.failed, 1, "{stats:?}");
    seen.extend(pids(&pool));
    drop(pool);
    assert_all_reaped(&seen);
}

/// How often a process blocked so far (`voluntary_ctxt_switches` of
/// `/proc/PID/status`): a worker blocks once per wait for a request.
fn waits_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

#[test]
fn submitted_tasks_travel_in_chunks() {
    // One worker, chunks of 100: 300 submitted tasks reach it in a few
    // requests (the chunks): it waits for work a few times, not once per
    // task.
    let opts = PoolOptions::new().workers(1).chunk_size(100);
    let mut pool = Pool::new(&opts, work).expect("pool");
    let pid = *pids(&pool).iter().next().expect("a worker");
    let before = waits_of(pid);
    let ids: Vec<_> = (0..300u64)
        .map(|n| pool.submit(n).expect("submit"))
        .collect();
    for (n, id) in (0u64..).zip(ids) {
        let r = pool.get(id, Some(DEADLINE)).expect("finished");
        assert_eq!(r.expect("ok"), work(n));
    }
    let waits = waits_of(pid) - before;
    assert!(
        waits < 60,
        "the worker waited {waits} times for 300 submitted tasks in chunks of 100"
    );
    drop(pool);
    assert_all_reaped(&HashSet::from([pid]));
}

#[test]
fn an_auto_chunked_map_of_10_million_items_holds_a_bounded_window() {
    // A lazily generated 10-million-item input: the map takes items only
    // as results are yielded, in runs, never more than its window ahead. The first
    // 300 000 results are checked (the whole run takes minutes in a debug
    // build; `examples/pool.rs --tasks 10000000 --chunk auto` prints the
    // peak RSS of a full one), then the map is dropped mid-way.
    const N: u64 = 10_000_000;
    const CHECKED: u64 = 300_000;
    let opts = PoolOptions::new().workers(2).chunk_size_auto();
    let mut pool = Pool::new(&opts, |n: u64| n ^ 0x5555).expect("pool");
    let taken = Rc::new(RefCell::new(0u64));
    let t = Rc::clone(&taken);
    let input = (0..N).inspect(move |_| *t.borrow_mut() += 1);
    let mut map = pool.map(input);
    let window = map.window() as u64;
    // 4 times what 2 workers hold: 2 chunks in flight each (the default
    // with chunking) of at most 1024 items.
    assert_eq!(window, 4 * 2 * 2 * 1024);
    let (mut n, mut ahead_max, mut ahead_min) = (0u64, 0u64, u64::MAX);
    let (mut runs, mut last_taken) = (0u64, 0u64);
    for r in map.by_ref().take(CHECKED as usize) {
        assert_eq!(r.expect("task"), n ^ 0x5555);
        n += 1;
        let now_taken = *taken.borrow();
        if now_taken > last_taken {
            runs += 1;
            last_taken = now_taken;
        }
        let ahead = now_taken - n;
        ahead_max = ahead_max.max(ahead);
        ahead_min = ahead_min.min(ahead);
        assert!(ahead <= window, "input taken {ahead} ahead of results");
    }
    drop(map);
    assert_eq!(n, CHECKED);
    // Items are taken in runs once half the window is free, not one per
    // result, and half a window stays ahead while the input lasts.
    assert!(
        runs <= CHECKED / (window / 2) + 2,
        "{runs} runs taken for {CHECKED} results"
    );
    assert!(
        ahead_min + 1 >= window / 2,
        "only {ahead_min} ahead at one point"
    );
    // It did run ahead (the window was used), and the rest of the 10
    // million was never taken.
    assert!(ahead_max > 64, "the map never ran ahead: {ahead_max}");
    assert!(*taken.borrow() <= CHECKED + window);
    let stats = pool.stats();
    assert_eq!(stats.failed, 0);
    // The dropped map's queued tasks never run: the pool goes idle, having
    // finished at most what was in flight when the map was dropped.
    assert!(wait_until(DEADLINE, || {
        pool.poll(Some(Duration::from_millis(10)));
        pool.stats().in_flight == 0
    }));
    assert!(
        pool.stats().completed <= stats.completed + stats.in_flight,
        "queued tasks ran after the drop: {:?} then {:?}",
        stats,
        pool.stats()
    );
}

#[test]
fn a_chunked_pool_recycles_after_max_tasks_per_worker() {
    let opts = PoolOptions::new()
        .workers(2)
        .chunk_size(100)
        .max_tasks_per_worker(5);
    let mut pool = Pool::new(&opts, |_: u64| std::process::id()).expect("pool");
    let ran: Vec<u32> = pool.map(0..40u64).map(|r| r.expect("task")).collect();
    // No worker served more than 5 tasks, chunks notwithstanding.
    for pid in ran.iter().collect::<HashSet<_>>() {
        let served = ran.iter().filter(|&p| p == pid).count();
        assert!(served <= 5, "pid {pid} served {served} tasks");
    }
}

#[test]
fn an_exec_pool_ignores_chunking_and_speaks_one_line_per_item() {
    let cat = Exec::new("cat", Vec::<String>::new()).expect("exec");
    let opts = PoolOptions::new().workers(2).chunk_size(10);
    let mut pool: Pool<u64, u64> = Pool::exec(&opts, &cat).expect("pool");
    let got: Vec<u64> = pool
        .map(0..2000u64)
        .collect::<Result<_, _>>()
        .expect("every task");
    assert_eq!(got, (0..2000u64).collect::<Vec<_>>());
}

#[test]
fn progress_counts_only_grow_and_end_at_the_exact_totals() {
    const N: u64 = 20_000;
    let opts = PoolOptions::new().workers(3).chunk_size_auto();
    let mut pool = Pool::new(&opts, |n: u64| {
        assert!(n % 5000 != 4999, "bad item");
        // Long enough (~0.2 s in all) for calls before the end.
        std::thread::sleep(Duration::from_micros(30));
        n
    })
    .expect("pool");
    let seen: Rc<RefCell<Vec<Progress>>> = Rc::default();
    let s = Rc::clone(&seen);
    pool.set_progress(Duration::from_millis(20), move |p| s.borrow_mut().push(*p));
    let started = std::time::Instant::now();
    let failed = pool.map(0..N).filter(Result::is_err).count();
    let took = started.elapsed();
    assert_eq!(failed, 4);
    let seen = seen.borrow();
    assert!(seen.len() >= 2, "{} calls", seen.len());
    assert!(
        seen.iter().any(|p| p.done + p.failed < N),
        "no call before the end: {seen:?}"
    );
    for w in seen.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(
            a.done <= b.done && a.failed <= b.failed && a.retried <= b.retried,
            "went back: {a:?} then {b:?}"
        );
    }
    // At most one call per 20 ms, plus the last (the pool ran out of work).
    let bound = took.as_millis() as usize / 20 + 2;
    assert!(seen.len() <= bound, "{} calls in {took:?}", seen.len());
    let last = seen[seen.len() - 1];
    assert_eq!(
        (
            last.submitted,
            last.done,
            last.failed,
            last.in_flight,
            last.queued
        ),
        (N, N - 4, 4, 0, 0),
        "{last:?}"
    );
    assert_eq!(last.replaced, pool.stats().replaced);
}

#[test]
fn the_readme_pool_example_is_the_compiled_doctest() {
    // The README's code is not compiled; the same lines in src/pool/mod.rs
    // are (a doctest), so a README that drifts from them fails here.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let module = std::fs::read_to_string(root.join("src/pool/mod.rs")).expect("mod.rs");
    let section = readme.split("\n## Pool\n").nth(1).expect("a Pool section");
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a rust block");
    assert!(block.contains("Pool::new(&opts"), "{block}");
    let doc: String = block
        .lines()
        .map(|l| {
            if l.is_empty() {
                "//!\n".to_string()
            } else {
                format!("//! {l}\n")
            }
        })
        .collect();
    assert!(
        module.contains(&doc),
        "README pool example differs from the doctest:\n{doc}"
    );
}
