//! `Pool` under tokio (feature `tokio`): a map with a per-task timeout and
//! retries, results in input order from a stream, in a dozen lines.
//!
//! `cargo run --example pool_tokio --features tokio`: squares 0..20 on four
//! workers; item 13 hangs, hits its 300 ms deadline on every try (3 tries:
//! its worker is killed and replaced each time) and reports each cause.
//! Workers are forked inside the current-thread runtime: the process has
//! one thread then (fork and threads: see the crate docs).

use std::time::Duration;

use miniray::pool::{Pool, PoolOptions};

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: pool_tokio
  (no flags) squares 0..20 on four workers; item 13 hangs and times out
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = args::Args::new("pool_tokio", USAGE);
    if let Some(flag) = args.next_flag() {
        args.unknown(&flag);
    }
    let opts = PoolOptions::new()
        .workers(4)
        .timeout(Duration::from_millis(300))
        .max_retries(2);
    let pool = Pool::new(&opts, |n: u64| {
        if n == 13 {
            std::thread::sleep(Duration::from_secs(60)); // a task that hangs
        }
        n * n
    })?
    .into_async()?;
    let mut results = pool.map(0..20u64);
    while let Some(result) = results.next().await {
        match result {
            Ok(square) => println!("{square}"),
            Err(e) => println!("{e}"),
        }
    }
    drop(results);
    println!("{:?}", pool.stats());
    Ok(())
}
