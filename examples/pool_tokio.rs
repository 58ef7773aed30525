//! A pool from async code: `PoolHandle` is `Send + Sync + Clone`, so tasks
//! spawned on a multi-thread tokio runtime share it, and its maps are
//! streams. A dozen lines.
//!
//! `cargo run --example pool_tokio`: squares 0..20 on four workers, as a
//! stream in input order; item 13 hangs, hits its 300 ms deadline on every
//! try (3 tries: its worker is killed and replaced each time) and reports
//! each cause; then 100 calls from 100 spawned tasks at once.

use std::time::Duration;

use futures_util::StreamExt;
use miniray::pool::{PoolHandle, PoolOptions};

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: pool_tokio
  (no flags) squares 0..20 on four workers; item 13 hangs and times out;
  then 100 concurrent calls from spawned tasks
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = args::Args::new("pool_tokio", USAGE);
    if let Some(flag) = args.next_flag() {
        args.unknown(&flag);
    }
    let opts = PoolOptions::new()
        .workers(4)
        .timeout(Duration::from_millis(300))
        .max_retries(2);
    let pool = PoolHandle::new(&opts, |n: u64| {
        if n == 13 {
            std::thread::sleep(Duration::from_secs(60)); // a task that hangs
        }
        n * n
    })?;
    let mut results = pool.map_stream(0..20u64);
    while let Some(result) = results.next().await {
        match result {
            Ok(square) => println!("{square}"),
            Err(e) => println!("{e}"),
        }
    }
    let calls: Vec<_> = (100..200u64)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(n).await })
        })
        .collect();
    let mut sum = 0;
    for c in calls {
        sum += c.await??;
    }
    println!("sum of 100 squares from spawned tasks: {sum}");
    println!("{:?}", pool.stats());
    Ok(())
}
