//! SharedMemory against inline messages: the parent fills a region of
//! `--mib N` MiB (default 1024) with f32 values through a typed view, seals
//! it read-only and hands it to `--workers K` local workers (default 2),
//! each of which sums its slice of the region's `f32` view and replies. Then
//! the same bytes go inline, as base64 text in messages of at most
//! `--chunk-mib` MiB (default 16; lines must stay under the line limit), and
//! are summed the same way. Prints both times and one JSON line.
//!
//! `cargo run --release --example shm_tensor -- --mib 1024 --workers 2`

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use miniray::{Channel, Reactor, SharedMemory, WorkerOptions};
use serde_json::{json, Value};

struct Args {
    mib: usize,
    workers: usize,
    chunk_mib: usize,
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: shm_tensor [--mib N] [--workers K] [--chunk-mib C]
  --mib N         region size in MiB (default 1024)
  --workers K     local workers summing slices (default 2)
  --chunk-mib C   largest inline message in MiB (default 16)
";

fn parse() -> Args {
    let mut a = Args {
        mib: 1024,
        workers: 2,
        chunk_mib: 16,
    };
    let mut args = args::Args::new("shm_tensor", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--mib" => a.mib = args.value(&flag),
            "--workers" => a.workers = args.value(&flag),
            "--chunk-mib" => a.chunk_mib = args.value(&flag),
            _ => args.unknown(&flag),
        }
    }
    if a.mib == 0 || a.workers == 0 || a.chunk_mib == 0 {
        args.fail("--mib, --workers and --chunk-mib must be at least 1");
    }
    a
}

/// The sum of f32s in this machine's byte order (a region's typed view
/// holds them so; the inline pieces are its bytes).
fn sum_f32(bytes: &[u8]) -> f64 {
    bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .sum()
}

fn sum_floats(floats: &[f32]) -> f64 {
    floats.iter().map(|&x| f64::from(x)).sum()
}

/// The worker: a region message sums floats `[start, end)` of the region's
/// `f32` view; inline messages carry base64 pieces of its slice, summed as
/// they come.
fn work(ch: &mut Channel) -> miniray::Result<()> {
    while let Some((msg, regions)) = ch.recv_regions::<Value>()? {
        let start = msg["start"].as_u64().unwrap_or(0) as usize;
        let end = msg["end"].as_u64().unwrap_or(0) as usize;
        let sum = if let Some(region) = regions.first() {
            let floats = region.view::<f32>()?;
            let end = end.min(floats.len());
            sum_floats(&floats[start.min(end)..end])
        } else {
            let text = msg["data"].as_str().unwrap_or("");
            let bytes = STANDARD.decode(text).unwrap_or_default();
            sum_f32(&bytes)
        };
        ch.send(&json!({"sum": sum}))?;
    }
    Ok(())
}

fn main() {
    let args = parse();
    if let Err(e) = run(args) {
        eprintln!("shm_tensor: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = args.mib << 20;
    let mut reactor = Reactor::new()?;
    let workers = (0..args.workers)
        .map(|_| reactor.spawn_channel(&WorkerOptions::new(), work))
        .collect::<Result<Vec<_>, _>>()?;

    let t = Instant::now();
    let mut region = SharedMemory::create("tensor", bytes)?;
    for (i, x) in region.view_mut::<f32>()?.iter_mut().enumerate() {
        *x = ((i % 1000) as f32) * 0.5;
    }
    // Filled: no process writes it again (and each worker maps it read-only).
    region.seal_read_only()?;
    let fill = t.elapsed();

    // Each worker's floats.
    let floats = region.view::<f32>()?;
    let per = floats.len().div_ceil(args.workers);
    let slices: Vec<(usize, usize)> = (0..args.workers)
        .map(|k| {
            (
                (k * per).min(floats.len()),
                ((k + 1) * per).min(floats.len()),
            )
        })
        .collect();
    let expected: Vec<f64> = slices
        .iter()
        .map(|&(s, e)| sum_floats(&floats[s..e]))
        .collect();

    // Shared memory: one handoff per worker.
    let t = Instant::now();
    for (&w, &(s, e)) in workers.iter().zip(&slices) {
        reactor.send_regions(
            w,
            &json!({"region": region.id(), "start": s, "end": e}),
            &[&region],
        )?;
    }
    let shm_sums = collect(&mut reactor, &workers)?;
    let shm_time = t.elapsed();

    // Inline: the same bytes as base64 text, chunked under the line limit.
    let chunk = (args.chunk_mib << 20) / 4 * 4;
    let t = Instant::now();
    let mut inline_parts = vec![0.0; workers.len()];
    let mut outstanding = vec![0usize; workers.len()];
    for (k, (&w, &(s, e))) in workers.iter().zip(&slices).enumerate() {
        for piece in region.as_slice()[s * 4..e * 4].chunks(chunk) {
            let msg = json!({"data": STANDARD.encode(piece)});
            loop {
                match reactor.send(w, &msg) {
                    Ok(()) => break,
                    // The worker's queue is full: take one reply, then retry.
                    Err(miniray::Error::Backpressure { .. }) => {
                        let v: Value = reactor.recv(w, Some(Duration::from_secs(600)))?;
                        inline_parts[k] += v["sum"].as_f64().unwrap_or(f64::NAN);
                        outstanding[k] -= 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            outstanding[k] += 1;
        }
    }
    for (k, &w) in workers.iter().enumerate() {
        for _ in 0..outstanding[k] {
            let v: Value = reactor.recv(w, Some(Duration::from_secs(600)))?;
            inline_parts[k] += v["sum"].as_f64().unwrap_or(f64::NAN);
        }
    }
    let inline_time = t.elapsed();

    for (k, want) in expected.iter().enumerate() {
        if (shm_sums[k] - want).abs() > 1e-6 * want.abs().max(1.0) {
            return Err(format!("worker {k}: shared-memory sum {} != {want}", shm_sums[k]).into());
        }
        if (inline_parts[k] - want).abs() > 1e-6 * want.abs().max(1.0) {
            return Err(format!("worker {k}: inline sum {} != {want}", inline_parts[k]).into());
        }
    }
    let ratio = inline_time.as_secs_f64() / shm_time.as_secs_f64();
    println!(
        "region             {} MiB of f32, {} workers",
        args.mib, args.workers
    );
    println!("fill + seal        {:.3} s", fill.as_secs_f64());
    println!(
        "shared memory      {:.3} s (handoff + sum)",
        shm_time.as_secs_f64()
    );
    println!(
        "inline             {:.3} s (base64 in {} MiB messages + sum)",
        inline_time.as_secs_f64(),
        args.chunk_mib
    );
    println!("inline / shared    {ratio:.1}x");
    println!(
        "{}",
        json!({"mib": args.mib, "workers": args.workers, "fill_s": fill.as_secs_f64(),
               "shm_s": shm_time.as_secs_f64(), "inline_s": inline_time.as_secs_f64(),
               "inline_chunk_mib": args.chunk_mib, "ratio": ratio})
    );
    Ok(())
}

/// One reply per worker: its sum.
fn collect(reactor: &mut Reactor, workers: &[miniray::Worker]) -> miniray::Result<Vec<f64>> {
    let mut sums = vec![0.0; workers.len()];
    for (k, &w) in workers.iter().enumerate() {
        let v: Value = reactor.recv(w, Some(Duration::from_secs(600)))?;
        sums[k] = v["sum"].as_f64().unwrap_or(f64::NAN);
    }
    Ok(sums)
}
