//! [`SlurmLauncher`]: worker programs started as Slurm job steps with
//! `srun`, their addresses read from `srun --label`'s output, each step's
//! hosts drained when the step ends.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::BufReader;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::error::ClusterError;
use super::feed::{Feed, HostChange};
use super::lines::{ended_tasks, for_each_line, split_label, worker_line, WorkerLine};

/// How long dropping a launcher waits for `squeue` to stop listing its
/// steps, unless told otherwise.
pub const DEFAULT_TEARDOWN: Duration = Duration::from_secs(10);

/// Lines of `srun`'s standard error kept per step for
/// [`StepStatus::stderr`].
const STDERR_KEPT: usize = 20;

/// Starts a worker program under Slurm and feeds its tasks' addresses.
///
/// Each [`SlurmLauncher::start_step`] runs
/// `srun [srun args] --label --unbuffered PROGRAM [ARGS]`: inside the
/// current allocation when the driver runs in one (`SLURM_JOB_ID` is set,
/// as in an `sbatch` script), else as a job of its own that `srun` asks
/// for (`-N4 -n4`). The program is expected to follow the worker contract
/// of [`serve_worker`](super::serve_worker): each task prints `listening on
/// HOST:PORT` (sent as [`HostChange::Add`]), `draining HOST:PORT` when it
/// stops taking work ([`HostChange::Drain`]) and, under Slurm, `slurm step
/// JOB.STEP`. When a step ends (its `srun` exits: `scancel`, the walltime,
/// the tasks exiting) every host of it still serving is drained; a task
/// `srun` reports dead (`srun: error: n1: task 0: Killed`) is drained at
/// once.
///
/// The driver's end is the workers' end: `srun`'s standard input is a
/// pipe the launcher holds, and the tasks get `MINIRAY_EXIT_ON_EOF=1`
/// (srun passes the environment on), so if the driver dies, even by
/// `SIGKILL`, `srun` forwards the end of input to every task and the
/// workers exit, which ends the step. Dropping the launcher kills each
/// `srun` (Slurm ends the step's tasks) and waits, up to
/// [`SlurmLauncher::teardown`], until `squeue` lists none of its steps.
///
/// Scale up with another [`start_step`](SlurmLauncher::start_step); scale
/// down with [`cancel_step`](SlurmLauncher::cancel_step) (`scancel
/// JOB.STEP`). For a drain before the walltime or a preemption, pass
/// `--signal=USR1@SECS` among the srun arguments: each worker then drains
/// (see [`DRAIN_SIGNALS`](super::DRAIN_SIGNALS)).
///
/// Everything runs on threads of the launcher's own (two per step,
/// reading `srun`'s output); the calls here start or signal processes and
/// never wait for a step's tasks. They take `&self`, so a launcher a pool
/// owns ([`Hosts::slurm`](crate::pool::Hosts::slurm)) starts and cancels
/// steps through [`Pool::host_source`](crate::pool::Pool::host_source).
pub struct SlurmLauncher {
    program: Vec<OsString>,
    srun: OsString,
    feed: Feed,
    env: Vec<(OsString, OsString)>,
    teardown: Duration,
    /// Every step started, in start order (behind a lock so that a shared
    /// launcher, such as a pool's, starts and cancels steps by `&self`).
    steps: Mutex<Vec<StepEntry>>,
}

/// A step started by a [`SlurmLauncher`]: a handle for
/// [`SlurmLauncher::cancel_step`] and [`SlurmLauncher::step_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step(u64);

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "launch {}", self.0)
    }
}

/// What a launcher knows of one of its steps.
#[derive(Clone, Debug)]
pub struct StepStatus {
    step: Step,
    slurm_step: Option<String>,
    serving: Vec<SocketAddr>,
    drained: Vec<SocketAddr>,
    ended: Option<String>,
    stderr: Vec<String>,
}

impl StepStatus {
    /// The handle.
    pub fn step(&self) -> Step {
        self.step
    }

    /// Slurm's `JOB.STEP`, once a task said it.
    pub fn slurm_step(&self) -> Option<&str> {
        self.slurm_step.as_deref()
    }

    /// Hosts added and not drained, by task rank.
    pub fn serving(&self) -> &[SocketAddr] {
        &self.serving
    }

    /// Hosts drained, by task rank.
    pub fn drained(&self) -> &[SocketAddr] {
        &self.drained
    }

    /// How `srun` ended ("exited with 0", "killed by SIGKILL"), once it
    /// has.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// The last lines of `srun`'s standard error (its own errors and the
    /// tasks' labelled standard error), and any address that did not
    /// resolve.
    pub fn stderr(&self) -> &[String] {
        &self.stderr
    }
}

struct StepEntry {
    step: Step,
    shared: Arc<Mutex<Shared>>,
    child: Arc<Mutex<Child>>,
    // Held open for the launcher's life: its end is the workers' signal.
    _stdin: Option<ChildStdin>,
    in_allocation: bool,
}

/// A step's state, written by its reader threads.
#[derive(Default)]
struct Shared {
    slurm_step: Option<String>,
    ranks: BTreeMap<u32, RankHost>,
    ended: Option<String>,
    stderr: VecDeque<String>,
    receiver_gone: bool,
}

struct RankHost {
    addr: SocketAddr,
    drained: bool,
}

impl Shared {
    /// Drains `rank`'s host if it serves; false once the receiver is gone.
    fn drain(&mut self, rank: u32, feed: &Feed) -> bool {
        match self.ranks.get_mut(&rank) {
            Some(h) if !h.drained => {
                h.drained = true;
                let sent = feed.send(HostChange::Drain(h.addr));
                self.receiver_gone |= !sent;
                sent
            }
            _ => true,
        }
    }

    fn add(&mut self, rank: u32, addr: SocketAddr, feed: &Feed) -> bool {
        if let Some(h) = self.ranks.get(&rank) {
            if h.addr == addr && !h.drained {
                return true;
            }
        }
        if !self.drain(rank, feed) {
            return false;
        }
        self.ranks.insert(
            rank,
            RankHost {
                addr,
                drained: false,
            },
        );
        let sent = feed.send(HostChange::Add(addr));
        self.receiver_gone |= !sent;
        sent
    }

    fn note(&mut self, line: String) {
        if self.stderr.len() == STDERR_KEPT {
            self.stderr.pop_front();
        }
        self.stderr.push_back(line);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain state: what a panicking reader left is still whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SlurmLauncher {
    /// A launcher of `program` with `args` (the worker program: a binary
    /// calling [`serve_worker`](super::serve_worker), or any program that
    /// prints the address line), feeding `feed`. Starts nothing yet.
    pub fn new<I, S>(program: impl AsRef<OsStr>, args: I, feed: Feed) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = vec![program.as_ref().to_os_string()];
        argv.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        SlurmLauncher {
            program: argv,
            srun: "srun".into(),
            feed,
            env: Vec::new(),
            teardown: DEFAULT_TEARDOWN,
            steps: Mutex::new(Vec::new()),
        }
    }

    /// The `srun` to run (default `srun` from `PATH`).
    pub fn srun(mut self, path: impl AsRef<OsStr>) -> Self {
        self.srun = path.as_ref().to_os_string();
        self
    }

    /// An environment variable for `srun` (and so for every task),
    /// `scancel` and `squeue` (`SLURM_CONF`, say).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// How long dropping the launcher waits for `squeue` to stop listing
    /// its steps (default [`DEFAULT_TEARDOWN`]).
    pub fn teardown(mut self, bound: Duration) -> Self {
        self.teardown = bound;
        self
    }

    /// Starts a step: `srun SRUN_ARGS --label --unbuffered PROGRAM ARGS`.
    /// Returns once `srun` is started; its hosts come through the feed as
    /// its tasks print their address lines.
    ///
    /// System calls: `fork`/`exec` of `srun` (through
    /// `std::process::Command`), two reader threads.
    pub fn start_step<I, S>(&self, srun_args: I) -> Result<Step, ClusterError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.srun);
        cmd.args(srun_args)
            .args(["--label", "--unbuffered"])
            .args(&self.program)
            .env("MINIRAY_EXIT_ON_EOF", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let in_allocation = match self.env.iter().rev().find(|(k, _)| k == "SLURM_JOB_ID") {
            Some((_, v)) => !v.is_empty(),
            None => std::env::var_os("SLURM_JOB_ID").is_some_and(|v| !v.is_empty()),
        };
        let mut child = cmd.spawn().map_err(|e| ClusterError::Command {
            command: shown.clone(),
            reason: e.to_string(),
        })?;
        let stdin = child.stdin.take();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClusterError::Command {
                command: shown,
                reason: "no pipes to read".into(),
            });
        };
        let mut steps = lock(&self.steps);
        let step = Step(steps.len() as u64);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let child = Arc::new(Mutex::new(child));

        let (sh, feed, ch) = (shared.clone(), self.feed.clone(), child.clone());
        let out = thread::Builder::new()
            .name(format!("miniray-srun-out {}", step.0))
            .spawn(move || read_stdout(stdout, &sh, &feed, &ch));
        let (sh, feed, ch) = (shared.clone(), self.feed.clone(), child.clone());
        let err = thread::Builder::new()
            .name(format!("miniray-srun-err {}", step.0))
            .spawn(move || read_stderr(stderr, &sh, &feed, &ch));
        if let Err(source) = out.and(err) {
            let mut c = lock(&child);
            let _ = c.kill();
            let _ = c.wait();
            return Err(ClusterError::Io {
                op: "start a reader of srun's output",
                source,
            });
        }
        steps.push(StepEntry {
            step,
            shared,
            child,
            _stdin: stdin,
            in_allocation,
        });
        Ok(step)
    }

    /// Ends a step: `scancel JOB.STEP` once a task named its step, else a
    /// `SIGKILL` to its `srun` (Slurm then ends the tasks). Its hosts are
    /// drained as the workers drain and when `srun` exits. A step already
    /// ended is left alone. Waits only for `scancel`.
    pub fn cancel_step(&self, step: Step) -> Result<(), ClusterError> {
        let (shared, child) = {
            let steps = lock(&self.steps);
            let entry = steps
                .iter()
                .find(|e| e.step == step)
                .ok_or_else(|| ClusterError::config(step.to_string(), "no such step"))?;
            (entry.shared.clone(), entry.child.clone())
        };
        let (ended, slurm_step) = {
            let s = lock(&shared);
            (s.ended.is_some(), s.slurm_step.clone())
        };
        if ended {
            return Ok(());
        }
        match slurm_step {
            Some(id) => run("scancel", &[id.as_str()], &self.env).map(drop),
            None => lock(&child).kill().map_err(|source| ClusterError::Io {
                op: "kill srun",
                source,
            }),
        }
    }

    /// Every step's status, in start order.
    pub fn steps(&self) -> Vec<StepStatus> {
        lock(&self.steps).iter().map(status_of).collect()
    }

    /// One step's status; `None` for a handle of another launcher.
    pub fn step_status(&self, step: Step) -> Option<StepStatus> {
        lock(&self.steps)
            .iter()
            .find(|e| e.step == step)
            .map(status_of)
    }
}

fn status_of(e: &StepEntry) -> StepStatus {
    let s = lock(&e.shared);
    StepStatus {
        step: e.step,
        slurm_step: s.slurm_step.clone(),
        serving: s
            .ranks
            .values()
            .filter(|h| !h.drained)
            .map(|h| h.addr)
            .collect(),
        drained: s
            .ranks
            .values()
            .filter(|h| h.drained)
            .map(|h| h.addr)
            .collect(),
        ended: s.ended.clone(),
        stderr: s.stderr.iter().cloned().collect(),
    }
}

impl fmt::Debug for SlurmLauncher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlurmLauncher")
            .field("program", &self.program)
            .field("steps", &self.steps())
            .finish_non_exhaustive()
    }
}

impl Drop for SlurmLauncher {
    fn drop(&mut self) {
        let mut steps = Vec::new();
        let mut jobs = Vec::new();
        let entries = std::mem::take(self.steps.get_mut().unwrap_or_else(PoisonError::into_inner));
        for e in &entries {
            {
                let mut c = lock(&e.child);
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Some(id) = lock(&e.shared).slurm_step.clone() {
                if !e.in_allocation {
                    if let Some((job, _)) = id.split_once('.') {
                        jobs.push(job.to_string());
                    }
                }
                steps.push(id);
            }
        }
        if steps.is_empty() {
            return;
        }
        let until = Instant::now().checked_add(self.teardown);
        loop {
            let listed_steps =
                run("squeue", &["-h", "-s", "-o", "%i"], &self.env).unwrap_or_default();
            let listed_jobs = if jobs.is_empty() {
                String::new()
            } else {
                run("squeue", &["-h", "-o", "%i"], &self.env).unwrap_or_default()
            };
            let left = steps
                .iter()
                .any(|s| listed_steps.lines().any(|l| l.trim() == s))
                || jobs
                    .iter()
                    .any(|j| listed_jobs.lines().any(|l| l.trim() == j));
            if !left || until.is_some_and(|u| Instant::now() >= u) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a Slurm command (with the launcher's variables) to its end; its
/// standard output, or an error with its standard error.
fn run(program: &str, args: &[&str], env: &[(OsString, OsString)]) -> Result<String, ClusterError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ClusterError::Command {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            command,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The address a task printed: `IP:PORT`, or `NAME:PORT` resolved here
/// (on the reader's thread).
fn to_addr(host: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = host.parse() {
        return Ok(a);
    }
    host.to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())
}

fn read_stdout(
    stdout: std::process::ChildStdout,
    shared: &Mutex<Shared>,
    feed: &Feed,
    child: &Mutex<Child>,
) {
    let _ = for_each_line(BufReader::new(stdout), |line| {
        let Some((rank, text)) = split_label(line) else {
            return;
        };
        let mut s = lock(shared);
        match worker_line(text) {
            WorkerLine::Listening(host) => match to_addr(host) {
                Ok(addr) => {
                    s.add(rank, addr, feed);
                }
                Err(e) => s.note(format!("task {rank}: address {host:?}: {e}")),
            },
            WorkerLine::Draining(_) => {
                s.drain(rank, feed);
            }
            WorkerLine::SlurmStep(id) => {
                if id
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                {
                    s.slurm_step = Some(id.to_string());
                }
            }
            WorkerLine::Other => {}
        }
        if s.receiver_gone {
            // Nobody follows these hosts any more: end the step.
            let _ = lock(child).kill();
        }
    });
    // Output closed: srun is ending. Every host still serving goes.
    {
        let mut s = lock(shared);
        let ranks: Vec<u32> = s.ranks.keys().copied().collect();
        for r in ranks {
            s.drain(r, feed);
        }
    }
    let ended = wait_bounded(child, Duration::from_secs(30));
    lock(shared).ended = Some(ended);
}

fn read_stderr(
    stderr: std::process::ChildStderr,
    shared: &Mutex<Shared>,
    feed: &Feed,
    child: &Mutex<Child>,
) {
    let _ = for_each_line(BufReader::new(stderr), |line| {
        let mut s = lock(shared);
        for rank in ended_tasks(line) {
            s.drain(rank, feed);
        }
        s.note(line.to_string());
        if s.receiver_gone {
            let _ = lock(child).kill();
        }
    });
}

/// `srun`'s end in words, waiting for it up to `bound` (its output is
/// closed, so it is ending); without the lock held between tries, so
/// `kill` is never kept waiting.
fn wait_bounded(child: &Mutex<Child>, bound: Duration) -> String {
    let until = Instant::now().checked_add(bound);
    loop {
        match lock(child).try_wait() {
            Ok(Some(status)) => {
                return crate::process::describe_as(crate::process::ChildKind::Exec, Some(status))
                    .to_string()
            }
            Ok(None) => {}
            Err(e) => return format!("unknown ({e})"),
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            return format!("output closed, still running after {bound:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}
