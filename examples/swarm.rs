//! The flagship: N local workers, M small JSON computations spread through
//! `wait_events` (one stream of ready workers and, with `--remote`, the
//! server's events) with a bounded number in flight per worker.
//!
//! `cargo run --release --example swarm -- [--workers N] [--tasks M]
//!  [--inflight K] [--format json|marshal] [--remote]`
//!
//! Progress goes to stderr; the summary (and one JSON line of the same
//! numbers) to stdout. Exits non-zero if any reply is wrong or missing.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::time::{Duration, Instant};

use miniray::{
    ConnectOptions, Event, Format, Reactor, ServerEvent, ServerOptions, Worker, WorkerOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

struct Args {
    workers: usize,
    tasks: usize,
    inflight: usize,
    format: Format,
    remote: bool,
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: swarm [--workers N] [--tasks M] [--inflight K] [--format json|marshal] [--remote]
  --workers N        local workers (default 1000)
  --tasks M          tasks to run (default 100000)
  --inflight K       tasks in flight per worker (default 4)
  --format F         json or marshal (default json)
  --remote           run the work through an in-process server over loopback TCP (default: off)
";

fn parse_args() -> Args {
    let mut a = Args {
        workers: 1000,
        tasks: 100_000,
        inflight: 4,
        format: Format::Json,
        remote: false,
    };
    let mut args = args::Args::new("swarm", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--workers" => a.workers = args.value(&flag),
            "--tasks" => a.tasks = args.value(&flag),
            "--inflight" => a.inflight = args.value(&flag),
            "--format" => a.format = args.value(&flag),
            "--remote" => a.remote = true,
            _ => args.unknown(&flag),
        }
    }
    if a.workers == 0 || a.inflight == 0 {
        args.fail("--workers and --inflight must be at least 1");
    }
    a
}

/// A task, as the worker receives it (a dict `{"id": .., "n": ..}` on the
/// wire, in either format).
#[derive(Serialize, Deserialize)]
struct Task {
    id: u64,
    n: u64,
}

/// A task's result.
#[derive(Serialize, Deserialize)]
struct Done {
    id: u64,
    sum: u64,
}

/// The work: the sum of squares below n, the slow way.
fn work(task: Task) -> Done {
    let sum: u64 = (0..task.n).map(|k| k * k).sum();
    Done { id: task.id, sum }
}

fn expected(n: u64) -> u64 {
    n.saturating_sub(1) * n * (2 * n).saturating_sub(1) / 6
}

fn task_n(id: usize) -> u64 {
    100 + (id % 900) as u64
}

/// A `kB` field of a `/proc` file, e.g. `VmHWM` of `/proc/self/status`.
fn proc_kib(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Median proportional set size of up to 20 workers, in KiB: what each
/// child really costs, with pages shared with the parent split among sharers.
fn median_child_pss_kib(reactor: &Reactor, workers: &[Worker]) -> Option<u64> {
    let step = (workers.len() / 20).max(1);
    let mut pss: Vec<u64> = workers
        .iter()
        .step_by(step)
        .filter_map(|&w| reactor.pid(w))
        .filter_map(|pid| proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:"))
        .collect();
    pss.sort_unstable();
    pss.get(pss.len() / 2).copied()
}

/// Hands out task ids, keeping at most `inflight` per worker.
struct Feeder<'a> {
    next: &'a mut usize,
    sent_at: &'a mut [Option<Instant>],
    tasks: usize,
    inflight: usize,
}

impl Feeder<'_> {
    fn refill(
        &mut self,
        reactor: &mut Reactor,
        w: Worker,
        queue: &mut VecDeque<usize>,
    ) -> miniray::Result<()> {
        while queue.len() < self.inflight && *self.next < self.tasks {
            let id = *self.next;
            reactor.send(
                w,
                &Task {
                    id: id as u64,
                    n: task_n(id),
                },
            )?;
            self.sent_at[id] = Some(Instant::now());
            queue.push_back(id);
            *self.next += 1;
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let args = parse_args();
    if let Err(e) = run(&args) {
        eprintln!("swarm: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let limit = miniray::raise_fd_limit()?;
    // One descriptor per worker, a few for the process itself and a spare
    // for each child between hang-up and exit during teardown.
    // Remote: the client socket and the serving child's pidfd, per worker.
    let per_worker = if args.remote { 2 } else { 1 };
    let needed = args.workers as u64 * per_worker + 32;
    if needed > limit {
        return Err(format!(
            "{} workers need about {needed} open files but the limit is {limit} \
             (raise the hard limit, e.g. `ulimit -Hn`, or use fewer workers)",
            args.workers
        )
        .into());
    }
    let mut reactor = Reactor::new()?;
    let opts = WorkerOptions::new().format(args.format);
    let copts = ConnectOptions::new().format(args.format);

    let server = if args.remote {
        let sopts = ServerOptions::new()
            .format(args.format)
            .max_connections(args.workers);
        Some(reactor.listen("127.0.0.1:0", &sopts, work)?)
    } else {
        None
    };
    let t0 = Instant::now();
    let mut workers = Vec::with_capacity(args.workers);
    for i in 0..args.workers {
        workers.push(match server {
            Some(s) => {
                let addr = reactor.server_addr(s)?;
                reactor.connect(addr, &copts, Some(Duration::from_secs(30)))?
            }
            None => reactor.spawn_with(&opts, work)?,
        });
        if (i + 1) % 1000 == 0 {
            eprint!("\rspawned {}/{}", i + 1, args.workers);
        }
    }
    let spawn_time = t0.elapsed();
    eprintln!(
        "\rspawned {} workers in {:.3} s",
        args.workers,
        spawn_time.as_secs_f64()
    );

    let mut sent_at: Vec<Option<Instant>> = vec![None; args.tasks];
    let mut latencies = Vec::with_capacity(args.tasks);
    let mut next = 0usize;
    let mut done = 0usize;
    let mut in_flight: Vec<VecDeque<usize>> = vec![VecDeque::new(); args.workers];
    let slot: HashMap<Worker, usize> = workers.iter().enumerate().map(|(i, &w)| (w, i)).collect();

    let t1 = Instant::now();
    let mut feed = Feeder {
        next: &mut next,
        sent_at: &mut sent_at,
        tasks: args.tasks,
        inflight: args.inflight,
    };
    for (i, &w) in workers.iter().enumerate() {
        feed.refill(&mut reactor, w, &mut in_flight[i])?;
    }
    let mut events = Vec::new();
    let mut last_report = Instant::now();
    let mut last_progress = Instant::now();
    let mut errors = 0usize;
    while done < args.tasks {
        // One stream: ready workers, and (with --remote) the server's
        // reports on its connections and children.
        reactor.wait_events_into(&mut events, Some(Duration::from_secs(30)))?;
        let mut progressed = false;
        for e in events.drain(..) {
            let w = match e {
                Event::Worker(w) => w,
                Event::Server(ServerEvent::AcceptFailed { error, .. }) => {
                    return Err(format!("server: {error}").into());
                }
                _ => continue,
            };
            progressed = true;
            let i = slot[&w];
            while let Some(reply) = reactor.try_recv::<Done>(w)? {
                let Some(id) = in_flight[i].pop_front() else {
                    return Err("reply with nothing in flight".into());
                };
                if let Some(t) = feed.sent_at[id] {
                    latencies.push(t.elapsed());
                }
                if reply.id != id as u64 || reply.sum != expected(task_n(id)) {
                    errors += 1;
                }
                done += 1;
            }
            feed.refill(&mut reactor, w, &mut in_flight[i])?;
        }
        if progressed {
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= Duration::from_secs(30) {
            return Err(format!(
                "no reply for 30 s with {} tasks outstanding",
                args.tasks - done
            )
            .into());
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let rate = done as f64 / t1.elapsed().as_secs_f64();
            eprint!("\r{done}/{} tasks, {rate:.0}/s   ", args.tasks);
            let _ = std::io::stderr().flush();
            last_report = Instant::now();
        }
    }
    let run_time = t1.elapsed();
    eprintln!("\r{done}/{} tasks done                ", args.tasks);

    let child_pss = median_child_pss_kib(&reactor, &workers);
    let t2 = Instant::now();
    let (clean, reaped) = match server {
        // Remote: close every connection; each serving child sees EOF,
        // exits and is reaped by the server (Exited events); then stop it.
        Some(s) => {
            for &w in &workers {
                reactor.close(w)?;
            }
            let (mut clean, mut reaped, mut closed) = (0, 0, 0);
            let deadline = Instant::now() + Duration::from_secs(120);
            while (reaped < args.workers || closed < args.workers) && Instant::now() < deadline {
                for e in reactor.wait_events(Some(Duration::from_secs(1)))? {
                    match e {
                        Event::Worker(w) => loop {
                            match reactor.try_recv::<Done>(w) {
                                Ok(Some(_)) => {}
                                Ok(None) => break,
                                Err(e) => {
                                    closed += usize::from(e.is_closed());
                                    break;
                                }
                            }
                        },
                        Event::Server(ServerEvent::Exited { status, .. }) => {
                            reaped += 1;
                            clean += usize::from(status.is_some_and(|s| s.success()));
                        }
                        _ => {}
                    }
                }
            }
            reactor.stop_server(s)?;
            (clean, reaped)
        }
        None => {
            let statuses = reactor.shutdown();
            let clean = statuses
                .iter()
                .filter(|(_, s)| s.is_some_and(|s| s.success()))
                .count();
            (clean, statuses.len())
        }
    };
    let teardown = t2.elapsed();
    let rss_self = proc_kib("/proc/self/status", "VmHWM:");

    latencies.sort_unstable();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let rate = done as f64 / run_time.as_secs_f64();
    println!("workers            {}", args.workers);
    println!(
        "format             {}{}",
        args.format,
        if args.remote {
            ", remote (loopback TCP)"
        } else {
            ""
        }
    );
    println!("tasks              {done} ({errors} wrong)");
    println!(
        "spawn              {:.3} s ({:.1} us/worker)",
        spawn_time.as_secs_f64(),
        spawn_time.as_secs_f64() * 1e6 / args.workers as f64
    );
    println!("throughput         {rate:.0} tasks/s");
    println!("latency p50        {:.1} us", p50.as_secs_f64() * 1e6);
    println!("latency p99        {:.1} us", p99.as_secs_f64() * 1e6);
    println!(
        "teardown           {:.3} s ({clean}/{} exited 0, all reaped)",
        teardown.as_secs_f64(),
        reaped
    );
    println!(
        "peak RSS parent    {:.1} MiB",
        rss_self.unwrap_or(0) as f64 / 1024.0
    );
    match child_pss {
        Some(kib) => println!("child PSS          {kib} KiB (median of sampled workers)"),
        None => println!("child PSS          n/a (remote workers: children belong to the server)"),
    }
    println!(
        "{}",
        json!({
            "workers": args.workers, "tasks": done, "errors": errors, "format": args.format.name(),
            "spawn_s": spawn_time.as_secs_f64(), "tasks_per_s": rate,
            "p50_us": p50.as_secs_f64() * 1e6, "p99_us": p99.as_secs_f64() * 1e6,
            "teardown_s": teardown.as_secs_f64(), "exited_clean": clean,
            "peak_rss_parent_kib": rss_self, "child_pss_kib": child_pss,
        })
    );
    if errors > 0 || clean != args.workers {
        return Err(format!(
            "{errors} wrong replies, {} workers did not exit cleanly",
            args.workers - clean
        )
        .into());
    }
    Ok(())
}
