//! A region shared read-only with a pool through
//! `PoolOptions::worker_options(WorkerOptions::new().region(&r))`: every
//! worker reads it, and so do the workers that replace killed ones. The
//! README's example is the compiled doctest of `src/shm.rs`.

mod common;

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::DEADLINE;
use miniray::pool::{Pool, PoolOptions};
use miniray::{SharedMemory, Signal, WorkerOptions};

const N: usize = 1 << 20;
const SLICE: usize = 1 << 16;

/// Each slice's sum, computed here.
fn expected(data: &[f32]) -> Vec<f64> {
    data.chunks(SLICE)
        .map(|c| c.iter().map(|&x| f64::from(x)).sum())
        .collect()
}

#[test]
fn workers_that_replace_killed_ones_read_the_inherited_region() {
    let data: Vec<f32> = (0..N).map(|i| (i % 1000) as f32).collect();
    let mut region = SharedMemory::from_slice("pool-inherited", &data).expect("region");
    region.seal_read_only().expect("seal");
    let region = Rc::new(region);
    let opts = PoolOptions::new()
        .workers(2)
        .worker_options(WorkerOptions::new().region(&region));
    let shared = Rc::clone(&region);
    // Each task answers with the worker's pid beside the slice's sum. It
    // also reads the seals through the region's descriptor, which only a
    // worker that kept it open (`WorkerOptions::region`) can.
    let mut pool = Pool::new(&opts, move |start: usize| -> (u32, f64) {
        assert!(shared
            .is_sealed_read_only()
            .expect("the descriptor is open"));
        let floats = shared.view::<f32>().expect("f32s");
        let sum = floats[start..start + SLICE]
            .iter()
            .map(|&x| f64::from(x))
            .sum();
        (std::process::id(), sum)
    })
    .expect("pool");
    let starts = || (0..N).step_by(SLICE);
    let first: Vec<(u32, f64)> = pool.map(starts()).map(|r| r.expect("task")).collect();
    assert_eq!(
        first.iter().map(|&(_, s)| s).collect::<Vec<_>>(),
        expected(&data)
    );
    let originals: BTreeSet<u32> = pool
        .workers()
        .into_iter()
        .filter_map(|w| pool.pid(w))
        .map(|p| p as u32)
        .collect();
    assert_eq!(originals.len(), 2);

    // Kill every worker; each is replaced by a new fork of the parent.
    for w in pool.workers() {
        pool.kill(w, Signal::KILL).expect("kill");
    }
    // Wait until both are replaced, so no task meets a dead worker.
    let deadline = Instant::now() + DEADLINE;
    while pool.stats().replaced < 2 {
        assert!(Instant::now() < deadline, "killed workers not replaced");
        pool.poll(Some(Duration::from_millis(20)));
    }
    let again: Vec<(u32, f64)> = pool
        .map(starts())
        .map(|r| r.expect("task after the kill"))
        .collect();
    assert_eq!(
        again.iter().map(|&(_, s)| s).collect::<Vec<_>>(),
        expected(&data),
        "a replacement read other bytes"
    );
    let answered: BTreeSet<u32> = again.iter().map(|&(pid, _)| pid).collect();
    assert!(
        answered.is_disjoint(&originals) && !answered.is_empty(),
        "answered by {answered:?}, killed {originals:?}"
    );
    assert!(pool.stats().replaced >= 2, "{:?}", pool.stats());
}

#[test]
fn the_readme_shared_memory_example_is_the_compiled_doctest() {
    // The README's code is not compiled; the same lines in src/shm.rs are
    // (a doctest), so a README that drifts from them fails here.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let module = std::fs::read_to_string(root.join("src/shm.rs")).expect("shm.rs");
    let section = readme
        .split("\n## Shared memory\n")
        .nth(1)
        .expect("a Shared memory section");
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a rust block");
    assert!(block.contains("seal_read_only()"), "{block}");
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
        "README shared memory example differs from the doctest:\n{doc}"
    );
}
