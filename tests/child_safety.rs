//! The forked child's path: no lock another parent thread may hold is taken
//! before (or by a panic in) the user's code, exec workers start with the
//! signal state a program expects, invalid `keep_fd`s fail before any fork,
//! and a worker that never answers is found by a deadline, killed and reaped.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{is_alive, is_reaped, wait_child, DEADLINE};
use miniray::{Error, Exec, Reactor, Worker, WorkerOptions};
use serde_json::{json, Value};

/// Tests here compare this process's set of children and pick closed
/// descriptor numbers, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pids of this process's children, from every thread's
/// `/proc/self/task/<tid>/children`.
fn children() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for task in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The events of `w` until its `Closed`, within [`DEADLINE`].
fn until_closed(r: &mut Reactor, w: Worker) -> (Vec<Value>, Option<std::process::ExitStatus>) {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match r.recv(w, Some(left)) {
            Ok(v) => got.push(v),
            Err(Error::Closed { status }) => return (got, status),
            Err(e) if e.is_message_error() => {}
            Err(e) => panic!("worker {w:?}: {e} after {got:?}"),
        }
    }
}

const INNER_ENV: &str = "MINIRAY_CHILD_SAFETY_INNER";

/// A thread of the parent panicking in a loop (each panic caught)
/// holds the default hook's backtrace lock much of the time; a child forked
/// then and panicking itself must not wait for it. Run in its own process
/// (stderr to /dev/null) so the noise thread's panic messages are neither
/// captured in memory by the test harness nor printed.
#[test]
fn panicking_parent_thread_never_hangs_a_worker() {
    let _serial = serial();
    let spawns = std::env::var("MINIRAY_SPAWNS").unwrap_or_else(|_| "1000".into());
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            "inner_panicking_parent_thread",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, &spawns)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inner test");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    // Each hung worker costs the inner test its 10 s deadline, 50 at a time;
    // 1000 spawns with none hung take seconds.
    let status = wait_child(&mut child, Duration::from_secs(300));
    let out = reader.join().expect("reader");
    // libtest prints the test's name on the same line, before the result.
    let line = out
        .lines()
        .find_map(|l| l.find("RESULT ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no RESULT line ({status}): {out}"));
    eprintln!("{line}");
    assert!(status.success(), "inner test failed ({status}): {out}");
    assert!(line.contains(" hung=0 "), "{line}");
    assert!(line.contains(&format!("spawned={spawns} ")), "{line}");
}

/// The body of [`panicking_parent_thread_never_hangs_a_worker`], run in a
/// process of its own.
#[test]
#[ignore = "run by panicking_parent_thread_never_hangs_a_worker in its own process"]
fn inner_panicking_parent_thread() {
    let Some(total) = std::env::var(INNER_ENV)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    else {
        return;
    };
    const ALIVE: usize = 50;
    const PER_WORKER: Duration = Duration::from_secs(10);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let noise = {
        let stop = stop.clone();
        let count = count.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::panic::catch_unwind(|| panic!("noise"));
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The noise thread is panicking before the first fork, not hoped to be.
    let start = Instant::now();
    while count.load(Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < PER_WORKER,
            "the noise thread never panicked"
        );
        std::thread::yield_now();
    }
    let noise_at_first_spawn = count.load(Ordering::Relaxed);
    let mut r = Reactor::new().expect("reactor");
    r.set_grace(Duration::from_millis(200));
    let opts = WorkerOptions::new();
    let mut alive: HashMap<Worker, Instant> = HashMap::new();
    let (mut spawned, mut hung, mut panicked, mut other) = (0usize, 0usize, 0usize, 0usize);
    while spawned < total || !alive.is_empty() {
        while spawned < total && alive.len() < ALIVE {
            let w = r
                .spawn_channel(&opts, |_ch| panic!("worker panics"))
                .expect("spawn");
            alive.insert(w, Instant::now() + PER_WORKER);
            spawned += 1;
        }
        for w in r
            .wait_any(Some(Duration::from_millis(50)))
            .expect("wait_any")
        {
            loop {
                match r.try_recv::<Value>(w) {
                    Ok(None) => break,
                    Ok(Some(v)) => panic!("unexpected message {v}"),
                    Err(Error::Closed { status }) => {
                        alive.remove(&w);
                        if status.and_then(|s| s.code()) == Some(miniray::process::EXIT_PANIC) {
                            panicked += 1;
                        } else {
                            other += 1;
                        }
                        break;
                    }
                    Err(_) => {}
                }
            }
        }
        // Hung workers are found by their deadline, killed and reaped.
        let now = Instant::now();
        let late: Vec<Worker> = alive
            .iter()
            .filter(|&(_, &d)| d <= now)
            .map(|(&w, _)| w)
            .collect();
        for w in late {
            hung += 1;
            r.kill(w, libc::SIGKILL).expect("kill");
            let (_, status) = until_closed(&mut r, w);
            assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
            alive.remove(&w);
        }
    }
    let noise_panics = count.load(Ordering::Relaxed) - noise_at_first_spawn;
    stop.store(true, Ordering::Relaxed);
    noise.join().expect("noise thread");
    println!(
        "RESULT spawned={spawned} hung={hung} panicked={panicked} other={other} noise_panics={noise_panics} "
    );
    assert_eq!(other, 0, "workers that ended otherwise than by their panic");
    assert!(
        noise_panics > 0,
        "the parent thread did not panic while workers were forked"
    );
}

/// An exec'd program finds SIGPIPE at its default and no signal
/// blocked, even though Rust ignores SIGPIPE and the spawning thread blocks
/// a signal. Read from `/proc/self/status` of the exec'd `sed` itself.
#[test]
fn exec_worker_starts_with_default_sigpipe_and_empty_mask() {
    let _serial = serial();
    let mut r = Reactor::new().expect("reactor");
    // Block SIGUSR2 in this thread while spawning, as a signalfd user would.
    // SAFETY: plain signal-mask calls on valid sets, restored below.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old),
            0,
            "pthread_sigmask"
        );
        old
    };
    let exec = Exec::new(
        "sed",
        [
            "-n",
            r#"s/^\(Sig[A-Za-z]*\):[[:space:]]*\([0-9a-f]*\)$/"\1 \2"/p"#,
            "/proc/self/status",
        ],
    )
    .expect("exec");
    let w = r.spawn_exec(&WorkerOptions::new(), &exec);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let w = w.expect("spawn sed");
    let (lines, status) = until_closed(&mut r, w);
    assert!(status.is_some_and(|s| s.success()), "sed: {status:?}");
    let field = |name: &str| -> u64 {
        lines
            .iter()
            .filter_map(|v| v.as_str())
            .find_map(|l| l.strip_prefix(name))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
    };
    let ignored = field("SigIgn ");
    let blocked = field("SigBlk ");
    let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        ignored & pipe_bit,
        0,
        "SIGPIPE ignored: SigIgn {ignored:016x}"
    );
    assert_eq!(blocked, 0, "signals blocked: SigBlk {blocked:016x}");
}

/// As a user meets it: `yes | head -n1` in an exec worker ends
/// `yes` by SIGPIPE, silently, instead of "Broken pipe" on its stderr.
#[test]
fn exec_worker_pipeline_ends_quietly_on_sigpipe() {
    let _serial = serial();
    let mut r = Reactor::new().expect("reactor");
    let script = r#"r=$( { yes | head -n1; } 2>&1 | tr '\n' ' ' ); printf '"%s"\n' "$r""#;
    let exec = Exec::new("sh", ["-c", script]).expect("exec");
    let w = r
        .spawn_exec(&WorkerOptions::new(), &exec)
        .expect("spawn sh");
    let (lines, status) = until_closed(&mut r, w);
    assert!(status.is_some_and(|s| s.success()), "sh: {status:?}");
    assert_eq!(lines, vec![json!("y ")]);
}

/// A negative, huge or closed `keep_fd` fails the spawn with a
/// typed error naming the descriptor, and nothing is forked.
#[test]
fn invalid_keep_fd_fails_at_spawn_and_forks_nothing() {
    let _serial = serial();
    let mut r = Reactor::new().expect("reactor");
    let closed = {
        let f = std::fs::File::open("/dev/null").expect("open");
        std::os::fd::AsRawFd::as_raw_fd(&f)
    };
    let exec = Exec::new("true", Vec::<String>::new()).expect("exec");
    for fd in [-1, i32::MIN, i32::MAX, closed] {
        let opts = WorkerOptions::new().keep_fd(fd);
        let before = children();
        let run = r.spawn_channel(&opts, |_ch| Ok(()));
        let exec = r.spawn_exec(&opts, &exec);
        let after = children();
        for (what, res) in [("spawn_channel", run), ("spawn_exec", exec)] {
            match res {
                Err(Error::BadDescriptor { fd: got, .. }) => assert_eq!(got, fd, "{what}"),
                Err(e) => panic!("{what} keep_fd({fd}): wrong error {e}"),
                Ok(w) => {
                    let _ = r.kill(w, libc::SIGKILL);
                    let _ = until_closed(&mut r, w);
                    panic!("{what} keep_fd({fd}) spawned a worker");
                }
            }
        }
        assert_eq!(before, after, "keep_fd({fd}): children were forked");
        assert!(r.is_empty());
    }
    // The error names the descriptor.
    let e = r
        .spawn_channel(&WorkerOptions::new().keep_fd(-1), |_ch| Ok(()))
        .expect_err("keep_fd(-1)");
    assert!(e.to_string().contains("-1"), "{e}");
}

/// A program that cannot be executed fails the spawn with an error naming
/// it and the OS error, reported through a close-on-exec pipe; the child is
/// reaped before `spawn_exec` returns.
#[test]
fn exec_failure_is_an_error_naming_the_program() {
    let _serial = serial();
    let mut r = Reactor::new().expect("reactor");
    let before = children();
    let exec = Exec::new("/nonexistent/miniray-program", ["x"]).expect("exec");
    match r.spawn_exec(&WorkerOptions::new(), &exec) {
        Err(Error::Exec { program, source }) => {
            assert_eq!(program, "/nonexistent/miniray-program");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(w) => {
            let closed = until_closed(&mut r, w);
            panic!("spawned: {closed:?}");
        }
    }
    assert_eq!(children(), before, "the failed child was not reaped");
    assert!(r.is_empty());
}

/// Recovery: a worker that never answers (and ignores SIGTERM) is
/// found by the caller's deadline, killed, its `Closed` carries the signal,
/// and no zombie is left. A second one is left to the reactor's drop, which
/// kills it after the grace period.
#[test]
fn silent_worker_is_found_by_deadline_killed_and_reaped() {
    let _serial = serial();
    let mut r = Reactor::new().expect("reactor");
    r.set_grace(Duration::from_millis(200));
    let silent = |_ch: &mut miniray::Channel| -> miniray::Result<()> {
        // SAFETY: ignoring SIGTERM in this child only; pause just sleeps.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        loop {
            // SAFETY: as above.
            unsafe { libc::pause() };
        }
    };
    let before = children();
    let w = r
        .spawn_channel(&WorkerOptions::new(), silent)
        .expect("spawn");
    let pids: Vec<i32> = children().difference(&before).copied().collect();
    assert_eq!(pids.len(), 1, "one child: {pids:?}");
    let pid = pids[0];
    r.send(w, &json!("are you there?")).expect("send");
    // The caller's deadline: whatever wait_any returns meanwhile, this
    // worker has nothing.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = r.wait_any(Some(left)).expect("wait_any");
        assert!(!ready.contains(&w), "the silent worker answered");
    }
    assert_eq!(r.try_recv::<Value>(w).expect("nothing queued"), None);
    r.kill(w, libc::SIGKILL).expect("kill");
    let (got, status) = until_closed(&mut r, w);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    assert!(is_reaped(pid), "pid {pid} left as a zombie");
    assert!(matches!(
        r.kill(w, libc::SIGKILL),
        Err(Error::UnknownWorker)
    ));

    // Left to drop: closed, waited for the grace period, killed, reaped.
    let before = children();
    r.spawn_channel(&WorkerOptions::new(), silent)
        .expect("spawn");
    let pids: Vec<i32> = children().difference(&before).copied().collect();
    assert_eq!(pids.len(), 1, "one child: {pids:?}");
    assert!(is_alive(pids[0]));
    let t = Instant::now();
    drop(r);
    assert!(t.elapsed() < DEADLINE, "drop took {:?}", t.elapsed());
    assert!(is_reaped(pids[0]), "pid {} not reaped by drop", pids[0]);
}
