//! The Slurm tests' cluster and worker program: [`Cluster`] brings a fresh
//! 4-node cluster up on this machine (`.ci/slurm/up`, nodes n1..n4 on
//! 127.0.0.11..14) and down on drop, one test at a time per test binary,
//! or says why none can run (not root, Slurm not installed); the worker
//! program is the test binary re-run under srun as its `inner_worker`
//! test, which serves only when [`WORKER_ENV`] is set ([`worker_if_asked`]).
//! Everything a test starts carries [`MARK_ENV`] in its environment (srun
//! passes it on to the tasks), so [`marked`] finds what is left.
//! Included with `#[path = "common/slurm.rs"]` beside `common/hosts.rs`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use miniray::cluster::{Feed, HostChange, SlurmLauncher, WorkerConfig};

use super::hosts::Watchdog;

/// Set in the worker's environment: the test binary then serves.
pub const WORKER_ENV: &str = "MINIRAY_TEST_SLURM_WORKER";
/// Microseconds each task sleeps in the worker.
pub const WORK_US_ENV: &str = "MINIRAY_TEST_SLURM_WORK_US";
/// A mark in the environment of everything a test starts (srun passes it
/// on to the tasks), to find leftovers in /proc.
pub const MARK_ENV: &str = "MINIRAY_TEST_SLURM_MARK";

/// The cluster's directory (its `slurm.conf`, state, logs).
const DIR: &str = "/tmp/miniray-slurm-test";

/// The body of `inner_worker`: with [`WORKER_ENV`] set, serves `2n + 1`
/// (after sleeping [`WORK_US_ENV`] µs) through `serve_worker_with`, its
/// settings from the environment.
pub fn worker_if_asked() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    let work_us: u64 = std::env::var(WORK_US_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // End libtest's "test inner_worker ... " line: the worker's first
    // line must start a line of its own.
    println!();
    let config = WorkerConfig::from_env().expect("worker config");
    miniray::cluster::serve_worker_with(&config, move |n: u64| {
        if work_us > 0 {
            std::thread::sleep(Duration::from_micros(work_us));
        }
        2 * n + 1
    })
    .expect("serve");
}

static SERIAL: Mutex<()> = Mutex::new(());

/// One cluster for one test: up on creation, down on drop.
pub struct Cluster {
    dir: PathBuf,
    conf: String,
    _serial: MutexGuard<'static, ()>,
}

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/slurm")
}

impl Cluster {
    /// A fresh cluster, or `None` (said why) where none can run.
    pub fn up(test: &str) -> Option<Cluster> {
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
        let dir = PathBuf::from(DIR);
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
    pub fn watchdog(&self, test: &str, bound: Duration) -> Watchdog {
        let dog = Watchdog::arm(test, bound);
        let down = scripts().join("down");
        dog.command(&[&down.to_string_lossy(), &self.dir.to_string_lossy()]);
        dog
    }

    /// The job ids `squeue` lists, one per line.
    pub fn squeue(&self) -> String {
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i"])
            .env("SLURM_CONF", &self.conf)
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `scancel ARGS`, which must succeed.
    pub fn scancel(&self, args: &[&str]) {
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

/// The `SLURM_CONF` every Slurm command of the tests needs.
pub fn conf() -> String {
    format!("{DIR}/slurm.conf")
}

/// This run's mark: unique per test process and call.
pub fn mark() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A launcher of this test binary as the worker program (its
/// `inner_worker` test), each task sleeping `work_us` µs per request,
/// everything marked with `mark`.
pub fn launcher(feed: Feed, work_us: u64, mark: &str) -> SlurmLauncher {
    let exe = std::env::current_exe().expect("current_exe");
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
    .env(WORK_US_ENV, work_us.to_string())
    .env(MARK_ENV, mark)
}

/// Pids of live processes (zombies excluded) whose environment holds
/// `MARK_ENV=mark`.
pub fn marked(mark: &str) -> Vec<u32> {
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
pub fn changes(rx: &Receiver<HostChange>, n: usize, within: Duration) -> Vec<HostChange> {
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

/// The addresses added among `c`.
pub fn added(c: &[HostChange]) -> BTreeSet<SocketAddr> {
    c.iter()
        .filter_map(|c| match c {
            HostChange::Add(a) => Some(*a),
            _ => None,
        })
        .collect()
}

/// The addresses drained among `c`.
pub fn drained(c: &[HostChange]) -> BTreeSet<SocketAddr> {
    c.iter()
        .filter_map(|c| match c {
            HostChange::Drain(a) => Some(*a),
            _ => None,
        })
        .collect()
}

/// Waits until `check` holds, up to `within`; false if it never did.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
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

/// A child killed and reaped on drop (a failed test leaves no driver).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This test binary re-run as its ignored test `inner`, the driver of a
/// kill test: `env` set (the driver's switch) and [`MARK_ENV`] = `mark`,
/// in a process group of its own that `dog` kills on a hang. Each line it
/// prints comes on the receiver (a reader thread ends at its EOF).
pub fn spawn_driver(
    inner: &str,
    env: &str,
    mark: &str,
    dog: &Watchdog,
) -> (KillOnDrop, Receiver<String>) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().expect("the test binary");
    let mut driver = Command::new(exe);
    driver
        .args([
            "--exact",
            inner,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, "1")
        .env(MARK_ENV, mark)
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
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (driver, rx)
}

impl Cluster {
    /// SIGKILLs the driver alone (as the OOM killer or a lost login session
    /// would) and asserts that within 15 s no process carrying `mark` is
    /// left and the queue is empty.
    pub fn kill_driver_expect_clean(&self, mut driver: KillOnDrop, mark: &str) {
        let running = marked(mark).len();
        let killed = Instant::now();
        driver.0.kill().expect("SIGKILL the driver");
        driver.0.wait().expect("reap the driver");
        let clean = eventually(Duration::from_secs(15), || {
            marked(mark).is_empty() && self.squeue().is_empty()
        });
        eprintln!(
            "after the driver's SIGKILL ({running} processes): workers gone and queue empty: \
             {clean} in {:?}",
            killed.elapsed()
        );
        assert!(
            clean,
            "left: processes {:?}, queue {:?}",
            marked(mark),
            self.squeue()
        );
    }
}
