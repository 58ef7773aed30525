//! `Pool::map` over local workers, remote hosts or a Slurm cluster's, with
//! workers killed along the way.
//!
//! `cargo run --release --example pool -- [--workers N] [--tasks M]
//!  [--kill-every K] [--chunk C|auto] [--inflight F] [--hosts H]
//!  [--slurm "SRUN ARGS"] [--dns NAME:PORT] [--exec CMD...]`
//!
//! Maps M trivial tasks (`n -> 2n + 1`) over N forked workers, in input
//! order; with `--kill-every K` a random worker is SIGKILLed after every K
//! results (its tasks in flight are retried elsewhere, it is replaced);
//! with `--chunk C` each request carries up to C items
//! ([`PoolOptions::chunk_size`]), with `--chunk auto` a size the pool picks
//! ([`PoolOptions::chunk_size_auto`]); `--inflight F` sends F requests to a
//! worker before its replies come. On a terminal, an `indicatif` progress
//! bar on stderr follows the pool's progress callback. Ends with one line:
//! `M tasks: 0 lost, 0 wrong, R retried, W workers replaced, S out of step, T tasks/s`
//! (stdout), and the peak memory on stderr. Exits 1 if any is lost or wrong.
//!
//! With `--hosts H` the workers are remote: the example starts H servers
//! (itself again, in a hidden `--serve ADDR` mode running the same work with
//! `miniray::listen`) on 127.0.0.2, 127.0.0.3, ..., and `Pool::remote`
//! spreads `--workers N` connections over them; `--kill-every K` then
//! SIGKILLs one whole host once, after K results (its tries in flight run
//! again on the others, its connections are refused and backed off).
//!
//! With `--slurm "SRUN ARGS"` the hosts are Slurm tasks: `Hosts::slurm`
//! runs `srun SRUN ARGS --label --unbuffered` with this program in a hidden
//! `--slurm-worker` mode (`cluster::serve_worker_with`), and the pool
//! connects to each task as it prints its address; `--workers N` is spread
//! over srun's task count (`-n`, else `-N`). `--kill-every K` then SIGKILLs
//! task 0 of the step once, after K results, from a step of its own on
//! every node of the job (`srun --jobid JOB --overlap` running this program
//! in a hidden `--kill-task JOB.STEP.RANK` mode, which kills the processes
//! of that task on its node): its tries in flight run again on the other
//! tasks, and srun's report of the dead task drains its host. Dropping the
//! pool ends the step. Needs `SLURM_CONF` (or a configured Slurm) and this
//! program at the same path on every node.
//!
//! With `--dns NAME:PORT` the hosts are the addresses of NAME (each
//! running `serve` on PORT), re-resolved every 5 s (`Hosts::dns`): new
//! addresses are added and vanished ones drained while the map runs;
//! `--workers N` is spread over the addresses NAME has at the start.
//!
//! Remote hosts speak frames, so `--chunk` applies to them too.
//!
//! With `--exec CMD...` (the last flag) the workers run a program speaking
//! lines (`Pool::exec`): it must answer each request `n` with `2n + 1`,
//! e.g. a Python one-liner; `--chunk` has no effect there (one line per
//! task, so the program needs no change).

use std::io::BufRead;
use std::net::ToSocketAddrs;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use miniray::cluster::{SlurmLauncher, WorkerConfig};
use miniray::pool::{Chunking, Hosts, Pool, PoolOptions, Progress};
use miniray::{Exec, Signal};

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: pool [--workers N] [--tasks M] [--kill-every K] [--chunk C|auto] [--inflight F] [--hosts H] [--slurm \"SRUN ARGS\"] [--dns NAME:PORT] [--exec CMD...]
  --workers N         workers (default 8); with --hosts, --slurm or --dns, connections in all
  --tasks M           tasks to run (default 100000)
  --kill-every K      SIGKILL a random worker after every K results (default 0: never)
  --chunk C|auto      items per request, or auto (default 1)
  --inflight F        requests in flight per worker (default: the pool's, 1, or 2 chunks)
  --hosts H           start H servers on 127.0.0.2.. and use them (default 0: local workers);
                      --kill-every then SIGKILLs one host once
  --slurm \"SRUN ARGS\" hosts launched by `srun SRUN ARGS` running this program (default: none),
                      e.g. --slurm \"-N4 -n4\"; --kill-every then SIGKILLs one task once
  --dns NAME:PORT     hosts: the addresses of NAME, each serving on PORT, re-resolved every 5 s
                      (default: none)
  --exec CMD...       (last) workers run CMD, which must answer each line n with 2n+1, e.g.
                      --exec python3 -c 'import sys
                      for l in sys.stdin: print(2 * int(l) + 1)'
";

struct Args {
    workers: usize,
    tasks: u64,
    kill_every: u64,
    chunk: Chunking,
    inflight: Option<usize>,
    hosts: usize,
    /// `--slurm "SRUN ARGS"`: srun's arguments, split at white space.
    slurm: Option<Vec<String>>,
    /// `--dns NAME:PORT`.
    dns: Option<(String, u16)>,
    /// `--exec CMD...`: the workers run this program instead of a closure.
    exec: Vec<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        workers: 8,
        tasks: 100_000,
        kill_every: 0,
        chunk: Chunking::None,
        inflight: None,
        hosts: 0,
        slurm: None,
        dns: None,
        exec: Vec::new(),
    };
    let mut args = args::Args::new("pool", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--workers" => a.workers = args.value(&flag),
            "--tasks" => a.tasks = args.value(&flag),
            "--kill-every" => a.kill_every = args.value(&flag),
            "--chunk" => a.chunk = parse_chunk(&args.value::<String>(&flag)),
            "--inflight" => a.inflight = Some(args.value(&flag)),
            "--hosts" => a.hosts = args.value(&flag),
            "--slurm" => {
                let words: Vec<String> = args
                    .value::<String>(&flag)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                a.slurm = Some(words);
            }
            "--dns" => {
                let text: String = args.value(&flag);
                match text.rsplit_once(':').map(|(n, p)| (n, p.parse::<u16>())) {
                    Some((name, Ok(port))) if !name.is_empty() => {
                        a.dns = Some((name.to_string(), port))
                    }
                    _ => args.fail(format!("--dns {text:?}: want NAME:PORT")),
                }
            }
            // Last: the rest of the line is the program.
            "--exec" => {
                a.exec = args.remaining();
                if a.exec.is_empty() {
                    args.fail("--exec needs a program (and its arguments) after it");
                }
            }
            // Hidden: this program as one of the --hosts servers.
            "--serve" => serve(&args.value::<String>(&flag)),
            // Hidden: this program as a --slurm task, and the killer of one.
            "--slurm-worker" => slurm_worker(),
            "--kill-task" => kill_task(&args.value::<String>(&flag)),
            _ => args.unknown(&flag),
        }
    }
    if a.workers == 0 || a.chunk == Chunking::Fixed(0) || a.inflight == Some(0) {
        args.fail("--workers, --chunk and --inflight must be at least 1");
    }
    let kinds = [
        !a.exec.is_empty(),
        a.hosts > 0,
        a.slurm.is_some(),
        a.dns.is_some(),
    ];
    if kinds.iter().filter(|&&k| k).count() > 1 {
        args.fail("--exec, --hosts, --slurm and --dns: choose one");
    }
    if a.dns.is_some() && a.kill_every > 0 {
        args.fail("--kill-every with --dns: the hosts are not this program's to kill");
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

/// `--serve ADDR`: one of the `--hosts` servers, serving [`work`]
/// until killed or its parent is gone. Prints `listening on ADDR`.
fn serve(addr: &str) -> ! {
    let served = (|| -> miniray::Result<()> {
        let parent = std::os::unix::process::parent_id();
        let mut reactor = miniray::Reactor::new()?;
        let opts = miniray::ServerOptions::new().max_connections(4096);
        let server = reactor.listen(addr, &opts, work)?;
        println!("listening on {}", reactor.server_addr(server)?);
        while std::os::unix::process::parent_id() == parent {
            reactor.wait_any(Some(Duration::from_secs(1)))?;
            reactor.take_server_events();
        }
        Ok(())
    })();
    if let Err(e) = served {
        eprintln!("pool --serve {addr}: {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// The `--hosts` servers, each in a process group of its own (the listener
/// and its per-connection children): killed and reaped on drop.
struct HostProcs(Vec<(Child, String)>);

impl HostProcs {
    /// Starts `n` servers on 127.0.0.2, 127.0.0.3, ... (a free port each).
    fn start(n: usize) -> std::io::Result<HostProcs> {
        let exe = std::env::current_exe()?;
        let mut procs = HostProcs(Vec::new());
        for i in 0..n {
            let listen = format!("127.0.0.{}:0", i + 2);
            let mut child = Command::new(&exe)
                .args(["--serve", &listen])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .process_group(0)
                .spawn()?;
            let out = child.stdout.take();
            procs.0.push((child, String::new()));
            let line = out
                .and_then(|o| std::io::BufReader::new(o).lines().next())
                .transpose()?
                .unwrap_or_default();
            let Some(addr) = line.strip_prefix("listening on ") else {
                return Err(std::io::Error::other(format!(
                    "server on {listen} did not start: {line:?}"
                )));
            };
            if let Some(last) = procs.0.last_mut() {
                last.1 = addr.trim().to_string();
            }
        }
        Ok(procs)
    }

    fn addrs(&self) -> Vec<String> {
        self.0.iter().map(|(_, a)| a.clone()).collect()
    }

    /// SIGKILLs host `i`, all of it.
    fn kill(&self, i: usize) {
        if let Some((child, addr)) = self.0.get(i) {
            eprintln!("pool: SIGKILL host {addr}");
            signal_group(child, libc::SIGKILL);
        }
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with plain integers, on a group this program
        // started and has not reaped.
        unsafe { libc::kill(-pgid, signal) };
    }
}

impl Drop for HostProcs {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            signal_group(child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// `--slurm-worker`: one `--slurm` task, serving [`work`] by the worker
/// contract (`serve_worker_with`: the node's address, the address line, a
/// drain on `SIGUSR1`/`SIGTERM`, an exit when the driver is gone), its
/// settings from the `MINIRAY_*` variables srun passes on.
fn slurm_worker() -> ! {
    let served =
        WorkerConfig::from_env().and_then(|c| miniray::cluster::serve_worker_with(&c, work));
    if let Err(e) = served {
        eprintln!("pool --slurm-worker: {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// `--kill-task JOB.STEP.RANK`, run on a node by `srun --overlap`: SIGKILLs
/// every process of this program on the node that is task RANK of step
/// JOB.STEP (the task and its serving children, found by their
/// environment). Prints how many it killed.
fn kill_task(spec: &str) -> ! {
    let parts: Vec<&str> = spec.split('.').collect();
    let [job, step, rank] = parts[..] else {
        eprintln!("pool: --kill-task {spec:?}: want JOB.STEP.RANK");
        std::process::exit(2);
    };
    let wanted = [
        format!("SLURM_JOB_ID={job}"),
        format!("SLURM_STEP_ID={step}"),
        format!("SLURM_PROCID={rank}"),
    ];
    let me = std::env::current_exe().ok();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("exe")).ok() != me {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if wanted.iter().all(|w| vars.contains(&w.as_bytes())) {
            // SAFETY: kill(2) with plain integers, on a process of this
            // program that is the task named.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    let node = std::env::var("SLURMD_NODENAME").unwrap_or_default();
    eprintln!("pool --kill-task {spec} on {node}: {killed} processes killed");
    std::process::exit(0)
}

/// The tasks `srun ARGS` starts: `-n`/`--ntasks`, else `-N`/`--nodes`
/// (its lower bound), else 1.
fn srun_tasks(args: &[String]) -> usize {
    let value = |short: &str, long: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            let text = if a == short || a == long {
                args.get(i + 1)?.as_str()
            } else if let Some(v) = a.strip_prefix(&format!("{long}=")) {
                v
            } else {
                a.strip_prefix(short).filter(|v| !v.is_empty())?
            };
            text.split('-').next()?.parse::<usize>().ok()
        })
    };
    value("-n", "--ntasks")
        .or_else(|| value("-N", "--nodes"))
        .unwrap_or(1)
        .max(1)
}

/// `--kill-every` with `--slurm`: task 0 of the pool's first step
/// SIGKILLed from a step of its own on every node of the job (`srun
/// --overlap`, not waited for here).
fn kill_slurm_task(pool: &Pool<u64, u64>) -> Option<Child> {
    let step = pool
        .host_source::<SlurmLauncher>()?
        .steps()
        .into_iter()
        .next()?;
    let Some(id) = step.slurm_step() else {
        eprintln!("pool: the step has not said its id yet: nothing killed");
        return None;
    };
    let job = id.split('.').next()?;
    let exe = std::env::current_exe().ok()?;
    eprintln!(
        "pool: SIGKILL task 0 of Slurm step {id} (hosts {:?})",
        step.serving()
    );
    let killer = Command::new("srun")
        .args(["--jobid", job, "--overlap", "--quiet"])
        .arg(exe)
        .args(["--kill-task", &format!("{id}.0")])
        .stdin(Stdio::null())
        .spawn();
    match killer {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("pool: srun to kill a task: {e}");
            None
        }
    }
}

/// Waits up to 30 s for the killer's srun, then kills it; reaps it.
fn reap(mut child: Child) {
    let until = Instant::now() + Duration::from_secs(30);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The pool: local workers, an exec'd program, or connections (`--workers`
/// of them in all, spread evenly) to the `--hosts` servers, to srun's
/// tasks, or to a DNS name's addresses.
fn make_pool(a: &Args, hosts: Option<&HostProcs>) -> miniray::Result<Pool<u64, u64>> {
    let mut opts = PoolOptions::new().workers(a.workers).chunking(a.chunk);
    if let Some(n) = a.inflight {
        opts = opts.in_flight_per_worker(n);
    }
    if let Some((program, args)) = a.exec.split_first() {
        return Pool::exec(&opts, &Exec::new(program, args)?);
    }
    // A deadline per try, so a host that goes silent loses nothing.
    let remote = opts.clone().timeout(Duration::from_secs(10));
    if let Some(srun) = &a.slurm {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("pool: this program's path, for srun: {e}");
                std::process::exit(1);
            }
        };
        let list = Hosts::slurm(srun, move |feed| {
            SlurmLauncher::new(&exe, ["--slurm-worker"], feed)
        })
        .per_host(a.workers.div_ceil(srun_tasks(srun)));
        return Pool::remote(&remote, &list);
    }
    if let Some((name, port)) = &a.dns {
        let now = (name.as_str(), *port)
            .to_socket_addrs()
            .map_or(0, Iterator::count);
        let list = Hosts::dns(name.clone(), *port).per_host(a.workers.div_ceil(now.max(1)));
        return Pool::remote(&remote, &list);
    }
    let Some(hosts) = hosts else {
        return Pool::new(&opts, work);
    };
    let list = Hosts::new(hosts.addrs())?.per_host(a.workers.div_ceil(a.hosts.max(1)));
    Pool::remote(&remote, &list)
}

fn main() -> miniray::Result<()> {
    let a = parse_args();
    let hosts = match a.hosts {
        0 => None,
        n => match HostProcs::start(n) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("pool: starting {n} hosts: {e}");
                std::process::exit(1);
            }
        },
    };
    let mut pool = make_pool(&a, hosts.as_ref())?;
    let bar = progress_bar(&mut pool, a.tasks);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut received, mut wrong, mut failed) = (0u64, 0u64, 0u64);
    let mut next_kill = a.kill_every;
    let mut killer = None;
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
        if a.slurm.is_some() && a.kill_every > 0 && expect >= next_kill {
            // With Slurm: one task, once.
            next_kill = u64::MAX;
            killer = bar.suspend(|| kill_slurm_task(map.pool()));
        } else if let (Some(hosts), true) = (&hosts, a.kill_every > 0 && expect >= next_kill) {
            // With hosts: one whole host, once.
            next_kill = u64::MAX;
            bar.suspend(|| hosts.kill(0));
        } else if a.kill_every > 0 && expect >= next_kill {
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
        "{} tasks: {lost} lost, {wrong} wrong, {} retried, {} workers replaced, {} out of step, {:.0} tasks/s",
        a.tasks,
        stats.retried,
        stats.replaced,
        stats.out_of_sync,
        a.tasks as f64 / secs
    );
    if let Some(why) = pool.last_out_of_sync() {
        eprintln!("pool: the latest worker out of step: {why}");
    }
    eprintln!(
        "pool: {} workers, chunk {:?}, {} in flight each, {failed} tasks failed, {:.2} s, peak RSS {} kB",
        a.workers,
        a.chunk,
        a.inflight.map_or("default".to_owned(), |n| n.to_string()),
        secs,
        status_kb("VmHWM:")
    );
    pool.close();
    drop(pool);
    if let Some(k) = killer {
        reap(k);
    }
    if lost > 0 || wrong > 0 {
        std::process::exit(1);
    }
    Ok(())
}
