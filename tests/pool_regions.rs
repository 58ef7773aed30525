//! Shared memory through the pool: tasks that carry regions (10,000 of
//! them, no descriptor left behind in the parent or the workers), refused
//! over TCP, and regions inherited at spawn seen by replacement workers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, DEADLINE};
use miniray::pool::{Hosts, Pool, PoolOptions};
use miniray::{Error, SharedMemory, Signal, WorkerOptions};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Each task carries a region of its own; the worker sums its bytes. Every
/// result is right, and the descriptor counts of the parent and of a worker
/// are the same after 10,000 tasks as after the first hundred.
#[test]
fn ten_thousand_tasks_each_with_its_region_leak_no_descriptor() {
    let opts = PoolOptions::new().workers(2);
    let mut pool = Pool::with_regions(
        &opts,
        |n: u64, regions: Vec<SharedMemory>| -> (u64, u64, u32) {
            let sum = regions
                .iter()
                .map(|r| r.as_slice().iter().map(|&b| u64::from(b)).sum::<u64>())
                .sum();
            (n, sum, std::process::id())
        },
    )
    .expect("pool");
    let run = |from: u64, to: u64, pool: &mut Pool<u64, (u64, u64, u32)>| -> Vec<u32> {
        let mut ids = Vec::new();
        for n in from..to {
            let mut r = SharedMemory::create("task", 4096).expect("region");
            let fill = (n % 251) as u8;
            r.as_mut_slice().expect("writable").fill(fill);
            ids.push((n, pool.submit_regions(n, &[&r]).expect("submit")));
            // The region is ours to drop: the pool holds its own descriptor.
        }
        let mut pids = Vec::new();
        for (n, id) in ids {
            let (m, sum, pid) = pool
                .get(id, Some(DEADLINE))
                .expect("finished")
                .expect("the task ran");
            assert_eq!((m, sum), (n, 4096 * (n % 251)), "task {n}");
            pids.push(pid);
        }
        pids
    };
    let pids = run(0, 100, &mut pool);
    let me = std::process::id();
    let parent_fds = open_fds(me);
    let worker = pids[0];
    let worker_fds = open_fds(worker);
    run(100, 10_000, &mut pool);
    assert_eq!(open_fds(me), parent_fds, "the parent's descriptors");
    assert_eq!(open_fds(worker), worker_fds, "a worker's descriptors");
}

/// Descriptors do not cross machines: a pool of remote hosts only refuses
/// a task with regions at once, naming why.
#[test]
fn regions_are_refused_for_a_pool_of_hosts_only() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hosts = Hosts::new([listener.local_addr().expect("addr")])
        .expect("hosts")
        .connect_timeout(Duration::from_millis(200));
    let mut pool: Pool<u64, u64> = Pool::remote(&PoolOptions::new(), &hosts).expect("pool");
    let r = SharedMemory::create("task", 4096).expect("region");
    match pool.submit_regions(1, &[&r]) {
        Err(e @ Error::Region { .. }) => assert!(e.to_string().contains("local workers"), "{e}"),
        other => panic!("{other:?}"),
    }
    // So is one whose host source has given no host yet.
    let waiting = Hosts::source(Ok);
    let mut pool: Pool<u64, u64> = Pool::remote(&PoolOptions::new(), &waiting).expect("pool");
    match pool.submit_regions(1, &[&r]) {
        Err(e @ Error::Region { .. }) => assert!(e.to_string().contains("local workers"), "{e}"),
        other => panic!("a pool with no host yet: {other:?}"),
    }
}

/// A region inherited at spawn (`WorkerOptions::region`) is there for a
/// replacement worker too: the worker reading it is killed, and its
/// replacement reads the same bytes.
#[test]
fn a_replacement_worker_sees_the_inherited_region() {
    let mut region = SharedMemory::create("weights", 1 << 16).expect("region");
    for (i, b) in region
        .as_mut_slice()
        .expect("writable")
        .iter_mut()
        .enumerate()
    {
        *b = (i % 7) as u8;
    }
    let want: u64 = region.as_slice().iter().map(|&b| u64::from(b)).sum();
    let shared = Arc::new(region);
    let seen = Arc::clone(&shared);
    let opts = PoolOptions::new()
        .workers(1)
        .worker_options(WorkerOptions::new().region(&shared));
    let mut pool = Pool::new(&opts, move |_: u64| -> u64 {
        seen.as_slice().iter().map(|&b| u64::from(b)).sum()
    })
    .expect("pool");
    let first = pool.workers()[0];
    let id = pool.submit(0).expect("submit");
    assert_eq!(
        pool.get(id, Some(DEADLINE)).expect("done").expect("ok"),
        want
    );
    pool.kill(first, Signal::KILL).expect("kill");
    assert!(
        wait_until(DEADLINE, || {
            pool.poll(Some(Duration::from_millis(10)));
            pool.workers().first().is_some_and(|&w| w != first)
        }),
        "replaced"
    );
    let id = pool.submit(1).expect("submit");
    assert_eq!(
        pool.get(id, Some(DEADLINE)).expect("done").expect("ok"),
        want
    );
    assert_eq!(pool.stats().replaced, 1);
}
