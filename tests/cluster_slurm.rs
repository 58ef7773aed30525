//! `SlurmLauncher` and `serve_worker` on a real 4-node Slurm cluster on
//! this machine (`.ci/slurm/up`: nodes n1..n4 on 127.0.0.11..14), as root:
//! hosts discovered with their nodes' addresses and answering, a step
//! cancelled (drained), a step started mid-run (added), the driver
//! SIGKILLed (no worker left, the queue empty), a drain on the step's
//! signal (in-flight work answered, new connections refused). Each test
//! brings a fresh cluster up and down (serialized), under a watchdog that
//! tears the cluster and every process group down if it runs too long.
//! Skips with a message off root or without Slurm (`.ci/run` installs it).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use miniray::cluster::{Feed, HostChange, SlurmLauncher, WorkerConfig};
use miniray::Reactor;

#[path = "common/hosts.rs"]
mod hosts;

use hosts::Watchdog;

/// Set in the worker's environment: the test binary then serves.
const WORKER_ENV: &str = "MINIRAY_TEST_SLURM_WORKER";
/// Milliseconds each task sleeps in the worker.
const WORK_MS_ENV: &str = "MINIRAY_TEST_SLURM_WORK_MS";
/// Set for the driver process of `the_driver_killed...`.
const DRIVER_ENV: &str = "MINIRAY_TEST_SLURM_DRIVER";
/// A mark in the environment of everything a test starts (srun passes it
/// on to the tasks), to find leftovers in /proc.
const MARK_ENV: &str = "MINIRAY_TEST_SLURM_MARK";

/// The worker program: the test binary re-run under srun.
#[test]
#[ignore = "the worker program srun starts"]
fn inner_worker() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    let work_ms: u64 = std::env::var(WORK_MS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // End libtest's "test inner_worker ... " line: the worker's first
    // line must start a line of its own.
    println!();
    let config = WorkerConfig::from_env().expect("worker config");
    miniray::cluster::serve_worker_with(&config, move |n: u64| {
        std::thread::sleep(Duration::from_millis(work_ms));
        2 * n + 1
    })
    .expect("serve");
}

/// A driver of its own: a launcher with one 4-task step, each host
/// printed as `host ADDR`; then it waits to be killed.
#[test]
#[ignore = "the driver process a test SIGKILLs"]
fn inner_driver() {
    if std::env::var_os(DRIVER_ENV).is_none() {
        return;
    }
    let (feed, changes) = Feed::channel();
    let mut slurm = launcher(feed, 0);
    let step = slurm.start_step(["-N4", "-n4"]).expect("srun");
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(HostChange::Add(a)) = changes.recv_timeout(Duration::from_millis(100)) {
            println!("host {a}");
        }
    }
    eprintln!("driver: {:?}", slurm.step_status(step));
    std::thread::sleep(Duration::from_secs(600));
}

static SERIAL: Mutex<()> = Mutex::new(());

/// One cluster for one test: up on creation, down on drop.
struct Cluster {
    dir: PathBuf,
    conf: String,
    _serial: MutexGuard<'static, ()>,
}

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/slurm")
}

impl Cluster {
    /// A fresh cluster, or `None` (said why) where none can run.
    fn up(test: &str) -> Option<Cluster> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED {test}: needs root to run a Slurm cluster");
            return None;
        }
        for tool in ["srun", "slurmctld", "slurmd", "munged", "scancel", "squeue"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                eprintln!("SKIPPED {test}: {tool} not installed (.ci/slurm/install)");
                return None;
            }
        }
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = PathBuf::from("/tmp/miniray-slurm-test");
        let out = Command::new(scripts().join("up"))
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run .ci/slurm/up");
        assert!(
            out.status.success(),
            ".ci/slurm/up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Cluster {
            conf: dir.join("slurm.conf").to_string_lossy().into_owned(),
            dir,
            _serial: serial,
        })
    }

    /// A watchdog that tears this cluster down if the test runs past `bound`.
    fn watchdog(&self, test: &str, bound: Duration) -> Watchdog {
        let dog = Watchdog::arm(test, bound);
        let down = scripts().join("down");
        dog.command(&[&down.to_string_lossy(), &self.dir.to_string_lossy()]);
        dog
    }

    fn squeue(&self) -> String {
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i"])
            .env("SLURM_CONF", &self.conf)
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn scancel(&self, args: &[&str]) {
        let out = Command::new("scancel")
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .expect("scancel");
        assert!(
            out.status.success(),
            "scancel {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("down"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status();
    }
}

fn conf() -> String {
    "/tmp/miniray-slurm-test/slurm.conf".to_string()
}

/// This run's mark: unique per test process and call.
fn mark() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A launcher of this test binary as the worker program.
fn launcher(feed: Feed, work_ms: u64) -> SlurmLauncher {
    let exe = std::env::current_exe().expect("current_exe");
    let mark = std::env::var(MARK_ENV).unwrap_or_else(|_| mark());
    SlurmLauncher::new(
        exe,
        [
            "--exact",
            "inner_worker",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        feed,
    )
    .env("SLURM_CONF", conf())
    .env(WORKER_ENV, "1")
    .env(WORK_MS_ENV, work_ms.to_string())
    .env(MARK_ENV, mark)
}

/// Pids of live processes (zombies excluded) whose environment holds
/// `MARK_ENV=mark`.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("{MARK_ENV}={mark}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// The next `n` changes, each within what is left of `within`.
fn changes(rx: &Receiver<HostChange>, n: usize, within: Duration) -> Vec<HostChange> {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(c) => got.push(c),
            Err(e) => panic!(
                "{} of {n} changes within {within:?} ({e}): {got:?}",
                got.len()
            ),
        }
    }
    got
}

fn added(c: &[HostChange]) -> BTreeSet<SocketAddr> {
    c.iter()
        .filter_map(|c| match c {
            HostChange::Add(a) => Some(*a),
            _ => None,
        })
        .collect()
}

fn drained(c: &[HostChange]) -> BTreeSet<SocketAddr> {
    c.iter()
        .filter_map(|c| match c {
            HostChange::Drain(a) => Some(*a),
            _ => None,
        })
        .collect()
}

/// One request to `addr` through `Reactor::connect`; its reply.
fn ask(addr: SocketAddr, n: u64) -> miniray::Result<u64> {
    let mut r = Reactor::new()?;
    let w = r.connect(
        addr,
        &miniray::ConnectOptions::new(),
        Some(Duration::from_secs(5)),
    )?;
    r.send(w, &n)?;
    r.recv(w, Some(Duration::from_secs(10)))
}

/// Waits until `check` holds, up to `within`; false if it never did.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn four_hosts_with_their_nodes_addresses_each_answer() {
    let Some(cluster) = Cluster::up("four_hosts_with_their_nodes_addresses_each_answer") else {
        return;
    };
    let _dog = cluster.watchdog("four_hosts...", Duration::from_secs(120));
    let (feed, rx) = Feed::channel();
    let mark = mark();
    let started = Instant::now();
    let mut slurm = launcher(feed, 0).env(MARK_ENV, &mark);
    let step = slurm.start_step(["-N4", "-n4"]).expect("srun");
    let got = changes(&rx, 4, Duration::from_secs(30));
    eprintln!("4 hosts in {:?}", started.elapsed());
    let hosts = added(&got);
    let ips: BTreeSet<String> = hosts.iter().map(|a| a.ip().to_string()).collect();
    let want: BTreeSet<String> = (1..=4).map(|i| format!("127.0.0.1{i}")).collect();
    assert_eq!(
        ips, want,
        "each task advertises its node's address: {got:?}"
    );
    for (i, &a) in hosts.iter().enumerate() {
        assert_eq!(
            ask(a, i as u64).expect("a reply"),
            2 * i as u64 + 1,
            "host {a}"
        );
    }
    let status = slurm.step_status(step).expect("status");
    assert!(status.slurm_step().is_some(), "{status:?}");
    assert_eq!(status.serving().len(), 4);

    let dropped = Instant::now();
    drop(slurm);
    eprintln!("launcher dropped in {:?}", dropped.elapsed());
    assert!(
        eventually(Duration::from_secs(10), || cluster.squeue().is_empty()),
        "queue still holds {}",
        cluster.squeue()
    );
    assert!(
        eventually(Duration::from_secs(10), || marked(&mark).is_empty()),
        "workers left: {:?}",
        marked(&mark)
    );
}

#[test]
fn a_cancelled_step_is_drained_and_a_new_step_is_added() {
    let Some(cluster) = Cluster::up("a_cancelled_step_is_drained_and_a_new_step_is_added") else {
        return;
    };
    let _dog = cluster.watchdog("a_cancelled_step...", Duration::from_secs(120));
    let (feed, rx) = Feed::channel();
    let mark = mark();
    let mut slurm = launcher(feed, 0).env(MARK_ENV, &mark);
    let first = slurm
        .start_step(["-N2", "-n2", "-w", "n1,n2"])
        .expect("srun");
    let a = added(&changes(&rx, 2, Duration::from_secs(30)));
    // Mid-run, a second step: its hosts are added.
    let second = slurm
        .start_step(["-N2", "-n2", "-w", "n3,n4"])
        .expect("srun");
    let b = added(&changes(&rx, 2, Duration::from_secs(30)));
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    for &h in &b {
        assert_eq!(ask(h, 20).expect("new host answers"), 41);
    }
    // The first step cancelled from outside (an operator, a preemption).
    let id = slurm
        .step_status(first)
        .and_then(|s| s.slurm_step().map(str::to_string))
        .expect("the first step's id");
    let cancelled = Instant::now();
    cluster.scancel(&[&id]);
    let gone = changes(&rx, 2, Duration::from_secs(20));
    eprintln!("step {id} drained in {:?}", cancelled.elapsed());
    assert_eq!(
        drained(&gone),
        a,
        "exactly the cancelled step's hosts drained"
    );
    for &h in &b {
        assert_eq!(ask(h, 7).expect("the other step serves on"), 15);
    }
    // Scale down through the launcher.
    slurm.cancel_step(second).expect("cancel");
    assert_eq!(drained(&changes(&rx, 2, Duration::from_secs(20))), b);
    assert!(eventually(Duration::from_secs(10), || {
        slurm.steps().iter().all(|s| s.ended().is_some())
    }));
    drop(slurm);
    assert!(eventually(Duration::from_secs(10), || cluster
        .squeue()
        .is_empty()));
    assert!(eventually(Duration::from_secs(10), || marked(&mark).is_empty()));
}

/// A child killed and reaped on drop (a failed test leaves no driver).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_driver_killed_leaves_no_worker_and_an_empty_queue() {
    let Some(cluster) = Cluster::up("the_driver_killed_leaves_no_worker_and_an_empty_queue") else {
        return;
    };
    let dog = cluster.watchdog("the_driver_killed...", Duration::from_secs(120));
    let mark = mark();
    let mut driver = Command::new(std::env::current_exe().expect("exe"));
    driver
        .args([
            "--exact",
            "inner_driver",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DRIVER_ENV, "1")
        .env(MARK_ENV, &mark)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut driver = KillOnDrop(driver.spawn().expect("driver"));
    dog.group(driver.0.id() as libc::pid_t);
    let out = driver.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            // The first follows libtest's "test inner_driver ... " on its line.
            if let Some(at) = line.find("host ") {
                let _ = tx.send(line[at + 5..].to_string());
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(30);
    let mut hosts = Vec::new();
    while hosts.len() < 4 {
        let left = until.saturating_duration_since(Instant::now());
        hosts.push(rx.recv_timeout(left).expect("the driver's 4 hosts"));
    }
    assert!(
        marked(&mark).len() >= 5,
        "the driver, srun and 4 workers run"
    );
    // The driver alone, as the OOM killer or a lost login session would.
    let killed = Instant::now();
    driver.0.kill().expect("SIGKILL the driver");
    driver.0.wait().expect("reap the driver");
    let clean = eventually(Duration::from_secs(15), || {
        marked(&mark).is_empty() && cluster.squeue().is_empty()
    });
    eprintln!(
        "after the driver's SIGKILL: workers gone and queue empty: {clean} in {:?}",
        killed.elapsed()
    );
    assert!(
        clean,
        "left: processes {:?}, queue {:?}",
        marked(&mark),
        cluster.squeue()
    );
}

#[test]
fn a_drain_signal_finishes_in_flight_work_and_refuses_new_connections() {
    let Some(cluster) =
        Cluster::up("a_drain_signal_finishes_in_flight_work_and_refuses_new_connections")
    else {
        return;
    };
    let _dog = cluster.watchdog("a_drain_signal...", Duration::from_secs(120));
    let (feed, rx) = Feed::channel();
    let mark = mark();
    let mut slurm = launcher(feed, 1500).env(MARK_ENV, &mark);
    let step = slurm.start_step(["-N2", "-n2"]).expect("srun");
    let hosts = added(&changes(&rx, 2, Duration::from_secs(30)));
    let id = slurm
        .step_status(step)
        .and_then(|s| s.slurm_step().map(str::to_string))
        .expect("step id");
    // A request in flight on each host when the signal comes.
    let mut r = Reactor::new().expect("reactor");
    let workers: Vec<_> = hosts
        .iter()
        .map(|&h| {
            let w = r
                .connect(
                    h,
                    &miniray::ConnectOptions::new(),
                    Some(Duration::from_secs(5)),
                )
                .expect("connect");
            r.send(w, &100u64).expect("send");
            w
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    // What `srun --signal=USR1@SECS` sends before the walltime.
    cluster.scancel(&["--signal=USR1", &id]);
    let gone = changes(&rx, 2, Duration::from_secs(10));
    eprintln!("drain lines {:?} after the signal", signalled.elapsed());
    assert_eq!(drained(&gone), hosts);
    for &w in &workers {
        let reply: u64 = r
            .recv(w, Some(Duration::from_secs(10)))
            .expect("the try in flight is answered after the drain");
        assert_eq!(reply, 201);
    }
    // A new connection is closed at once.
    for &h in &hosts {
        match ask(h, 1) {
            Err(e) if e.is_closed() => {}
            other => panic!("a draining host {h} served a new connection: {other:?}"),
        }
    }
    // The old connections close: the workers exit, the step ends.
    for w in workers {
        r.close(w).expect("close");
    }
    drop(r);
    assert!(
        eventually(Duration::from_secs(15), || slurm
            .step_status(step)
            .is_some_and(|s| s.ended().is_some())),
        "the step ends once its drained workers are idle: {:?}",
        slurm.step_status(step)
    );
    drop(slurm);
    assert!(eventually(Duration::from_secs(10), || cluster
        .squeue()
        .is_empty()));
    assert!(eventually(Duration::from_secs(10), || marked(&mark).is_empty()));
}
