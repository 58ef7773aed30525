//! `Pool::map` over local workers, with workers killed along the way.
//!
//! `cargo run --release --example pool -- [--workers N] [--tasks M]
//!  [--kill-every K] [--chunk C|auto] [--inflight F]`
//!
//! Maps M trivial tasks (`n -> 2n + 1`) over N forked workers, in input
//! order; with `--kill-every K` a random worker is SIGKILLed after every K
//! results (its tasks in flight are retried elsewhere, it is replaced);
//! with `--chunk C` each request carries up to C items
//! ([`PoolOptions::chunk_size`]), with `--chunk auto` a size the pool picks
//! ([`PoolOptions::chunk_size_auto`]); `--inflight F` sends F requests to a
//! worker before its replies come. On a terminal, an `indicatif` progress
//! bar on stderr follows the pool's progress callback. Ends with one line:
//! `M tasks: 0 lost, 0 wrong, R retried, W workers replaced, T tasks/s`
//! (stdout), and the peak memory on stderr. Exits 1 if any is lost or wrong.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use miniray::pool::{Chunking, Pool, PoolOptions, Progress};
use miniray::Signal;

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: pool [--workers N] [--tasks M] [--kill-every K] [--chunk C] [--inflight F]
  --workers N        local workers (default 8)
  --tasks M          tasks to run (default 100000)
  --kill-every K     SIGKILL a random worker after every K results (default 0: never)
  --chunk C|auto     items per request, or auto (default 1)
  --inflight F       requests in flight per worker (default 1)
";

struct Args {
    workers: usize,
    tasks: u64,
    kill_every: u64,
    chunk: Chunking,
    inflight: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        workers: 8,
        tasks: 100_000,
        kill_every: 0,
        chunk: Chunking::None,
        inflight: 1,
    };
    let mut args = args::Args::new("pool", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--workers" => a.workers = args.value(&flag),
            "--tasks" => a.tasks = args.value(&flag),
            "--kill-every" => a.kill_every = args.value(&flag),
            "--chunk" => a.chunk = parse_chunk(&args.value::<String>(&flag)),
            "--inflight" => a.inflight = args.value(&flag),
            _ => args.unknown(&flag),
        }
    }
    if a.workers == 0 || a.chunk == Chunking::Fixed(0) || a.inflight == 0 {
        args.fail("--workers, --chunk and --inflight must be at least 1");
    }
    a
}

/// `--chunk`: a number of items per request, or `auto`.
fn parse_chunk(text: &str) -> Chunking {
    match text {
        "auto" => Chunking::Auto,
        n => match n.parse::<usize>() {
            Ok(1) => Chunking::None,
            Ok(n) => Chunking::Fixed(n),
            Err(_) => {
                eprintln!("pool: --chunk takes a number or auto, not {n:?}\n{USAGE}");
                std::process::exit(2);
            }
        },
    }
}

/// A progress bar on stderr fed by the pool's progress callback (every
/// 100 ms); indicatif draws nothing when stderr is not a terminal.
fn progress_bar(pool: &mut Pool<u64, u64>, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
    {
        bar.set_style(style);
    }
    let b = bar.clone();
    pool.set_progress(Duration::from_millis(100), move |p: &Progress| {
        b.set_position(p.done + p.failed);
        b.set_message(format!(
            "{} in flight, {} retried, {} failed",
            p.in_flight, p.retried, p.failed
        ));
    });
    bar
}

/// The work, on one item.
fn work(n: u64) -> u64 {
    2 * n + 1
}

/// A `kB` field of `/proc/self/status` (`VmHWM`: peak resident memory).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() -> miniray::Result<()> {
    let a = parse_args();
    let opts = PoolOptions::new()
        .workers(a.workers)
        .in_flight_per_worker(a.inflight)
        .chunking(a.chunk);
    let mut pool = Pool::new(&opts, work)?;
    let bar = progress_bar(&mut pool, a.tasks);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut received, mut wrong, mut failed) = (0u64, 0u64, 0u64);
    let mut next_kill = a.kill_every;
    let started = Instant::now();
    let mut map = pool.map(0..a.tasks);
    let mut expect = 0u64;
    while let Some(result) = map.next() {
        match result {
            Ok(r) => {
                wrong += u64::from(r != work(expect));
                received += 1;
            }
            Err(e) => {
                bar.suspend(|| eprintln!("pool: {e}"));
                failed += 1;
            }
        }
        expect += 1;
        if a.kill_every > 0 && expect >= next_kill {
            next_kill += a.kill_every;
            let workers = map.pool().workers();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if let Some(&w) = workers.get((rng % workers.len().max(1) as u64) as usize) {
                let _ = map.kill(w, Signal::KILL);
            }
        }
    }
    drop(map);
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let stats = pool.stats();
    let lost = a.tasks.saturating_sub(received);
    println!(
        "{} tasks: {lost} lost, {wrong} wrong, {} retried, {} workers replaced, {:.0} tasks/s",
        a.tasks,
        stats.retried,
        stats.replaced,
        a.tasks as f64 / secs
    );
    eprintln!(
        "pool: {} workers, chunk {:?}, {} in flight each, {failed} tasks failed, {:.2} s, peak RSS {} kB",
        a.workers,
        a.chunk,
        a.inflight,
        secs,
        status_kb("VmHWM:")
    );
    pool.close();
    if lost > 0 || wrong > 0 {
        std::process::exit(1);
    }
    Ok(())
}
