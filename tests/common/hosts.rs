//! `serve` hosts for the remote pool tests: each is this test binary run
//! again as a server process (its `inner_serve` test, which only serves
//! when [`SERVE_ENV`] names an address), in a process group of its own.
//! miniray forks each serving child into a group of its own too, so a whole
//! host (the listener and its per-connection children) is killed or stopped
//! by signalling its group and its children's. [`Host`] kills, resumes and
//! reaps it on drop.
//!
//! A watchdog bounds every test that starts hosts: each [`Host`] is
//! watched from its start, and once one has lived past
//! [`watchdog_bound`] (a loop on results that never ends: deadlines and
//! keepalive both broken), the watchdog kills every watched host's process
//! group and its children's, deletes the network namespaces they run in,
//! prints what it did and exits the test process with a failure, instead
//! of letting it block until CI's limit. [`Watchdog`] is the same for what
//! a test starts itself (daemons, a cluster), with its own bound and
//! cleanup commands.

#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The environment variable naming the address `inner_serve` listens on.
pub const SERVE_ENV: &str = "MINIRAY_TEST_SERVE_ADDR";

/// With it set, the server requires this secret.
pub const SECRET_ENV: &str = "MINIRAY_TEST_SECRET";

/// Milliseconds each task sleeps on the server (so maps last long enough to
/// be hit mid-way).
pub const WORK_MS_ENV: &str = "MINIRAY_TEST_WORK_MS";

/// The work every test server does.
pub fn work(n: u64) -> u64 {
    2 * n + 1
}

/// The body of `inner_serve`: serves `work` on the address in
/// [`SERVE_ENV`] (port 0 picks one), prints `listening on ADDR`, and serves
/// until killed, its parent is gone, or 10 minutes pass.
pub fn serve_if_asked() {
    let Ok(addr) = std::env::var(SERVE_ENV) else {
        return;
    };
    let work_ms: u64 = std::env::var(WORK_MS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let parent = std::os::unix::process::parent_id();
    let mut r = miniray::Reactor::new().expect("reactor");
    let mut opts = miniray::ServerOptions::new();
    if let Some(secret) = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()) {
        opts = opts.secret(miniray::Secret::new(secret.into_bytes()).expect("secret"));
    }
    let server = r
        .listen(addr.as_str(), &opts, move |n: u64| {
            if work_ms > 0 {
                std::thread::sleep(Duration::from_millis(work_ms));
            }
            work(n)
        })
        .expect("listen");
    println!("listening on {}", r.server_addr(server).expect("addr"));
    let until = Instant::now() + Duration::from_secs(600);
    while Instant::now() < until && std::os::unix::process::parent_id() == parent {
        let _ = r.wait_any(Some(Duration::from_secs(1)));
        let _ = r.take_server_events();
    }
}

/// The variable that overrides [`watchdog_bound`], in seconds.
pub const WATCHDOG_ENV: &str = "MINIRAY_TEST_WATCHDOG_SECS";

/// How long a host may live before the watchdog fires: 300 s, or
/// [`WATCHDOG_ENV`].
pub fn watchdog_bound() -> Duration {
    std::env::var(WATCHDOG_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs)
}

/// A watched host: its process group and the namespace it runs in.
struct Watched {
    id: u64,
    pgid: libc::pid_t,
    namespace: Option<String>,
    since: Instant,
}

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static WATCHER: OnceLock<()> = OnceLock::new();
static NEXT_WATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn watched() -> std::sync::MutexGuard<'static, Vec<Watched>> {
    WATCHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Watches a host's group (and namespace) until [`unwatch`]; starts the
/// watchdog thread with the first.
fn watch(pgid: libc::pid_t, namespace: Option<String>) -> u64 {
    let id = NEXT_WATCH.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    watched().push(Watched {
        id,
        pgid,
        namespace,
        since: Instant::now(),
    });
    WATCHER.get_or_init(|| {
        let bound = watchdog_bound();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let all = watched();
            if let Some(late) = all.iter().find(|w| w.since.elapsed() > bound) {
                let what = format!("a host (group {}) ran past {bound:?}", late.pgid);
                let groups: Vec<_> = all.iter().map(|w| w.pgid).collect();
                let namespaces: Vec<_> = all.iter().filter_map(|w| w.namespace.clone()).collect();
                drop(all);
                fire(&what, &groups, &namespaces, &[]);
            }
        });
    });
    id
}

fn unwatch(id: u64) {
    watched().retain(|w| w.id != id);
}

/// Kills `groups`, deletes `namespaces`, runs `commands`, says so, and
/// ends the test process with a failure.
fn fire(what: &str, groups: &[libc::pid_t], namespaces: &[String], commands: &[Vec<String>]) -> ! {
    eprintln!(
        "WATCHDOG: {what}: killing process groups {groups:?}, deleting namespaces {namespaces:?}, running {commands:?}; failing the test"
    );
    for &pgid in groups {
        // SAFETY: kill(2) with plain integers; each group was started by
        // this test process.
        unsafe {
            libc::kill(-pgid, libc::SIGCONT);
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    for &pgid in groups {
        // The group's leader is this process's child: reap it (SIGKILLed,
        // so this returns at once). SAFETY: waitpid on our own child's pid
        // with a null status pointer.
        unsafe {
            libc::waitpid(pgid, std::ptr::null_mut(), 0);
        }
    }
    for ns in namespaces {
        delete_namespace(ns);
    }
    for cmd in commands {
        if let Some((program, args)) = cmd.split_first() {
            let _ = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .status();
        }
    }
    std::process::exit(99);
}

/// Deletes a namespace and the far ends of its veth pairs (deleting the
/// namespace alone can leave them behind).
fn delete_namespace(ns: &str) {
    let inside = Command::new("ip")
        .args(["netns", "exec", ns, "ip", "-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // `3: mrp1x0@if7: ...`: the peer is interface 7 outside.
    let peers: Vec<String> = inside
        .split("@if")
        .skip(1)
        .filter_map(|rest| rest.split(':').next().map(str::to_string))
        .collect();
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
    let outside = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in outside.lines() {
        let mut parts = line.splitn(3, ": ");
        if let (Some(index), Some(name)) = (parts.next(), parts.next()) {
            if peers.iter().any(|p| p == index.trim()) {
                let name = name.split('@').next().unwrap_or(name);
                let _ = Command::new("ip").args(["link", "del", name]).status();
            }
        }
    }
}

/// A bound on one test: past it, the process groups and namespaces
/// registered with it are killed and deleted, its cleanup commands run,
/// and the test process exits with a failure. Disarmed on drop.
pub struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
}

#[derive(Default)]
struct WatchState {
    done: bool,
    groups: Vec<libc::pid_t>,
    namespaces: Vec<String>,
    commands: Vec<Vec<String>>,
}

impl Watchdog {
    /// Arms a watchdog for `what` (the test's name) firing after `bound`.
    pub fn arm(what: &str, bound: Duration) -> Watchdog {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let s = state.clone();
        let what = what.to_string();
        std::thread::spawn(move || {
            let (lock, cv) = &*s;
            let until = Instant::now() + bound;
            let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while !st.done {
                let now = Instant::now();
                if now >= until {
                    let (g, n, c) = (
                        st.groups.clone(),
                        st.namespaces.clone(),
                        st.commands.clone(),
                    );
                    drop(st);
                    fire(&format!("{what} ran past {bound:?}"), &g, &n, &c);
                }
                st = cv
                    .wait_timeout(st, until - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        });
        Watchdog { state }
    }

    fn with(&self, f: impl FnOnce(&mut WatchState)) {
        f(&mut self.state.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Kill this process group if the watchdog fires.
    pub fn group(&self, pgid: libc::pid_t) {
        self.with(|s| s.groups.push(pgid));
    }

    /// Delete this network namespace if the watchdog fires.
    pub fn namespace(&self, ns: &str) {
        self.with(|s| s.namespaces.push(ns.to_string()));
    }

    /// Run this command if the watchdog fires (after the kills).
    pub fn command(&self, argv: &[&str]) {
        self.with(|s| {
            s.commands
                .push(argv.iter().map(|a| a.to_string()).collect())
        });
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.with(|s| s.done = true);
        self.state.1.notify_all();
    }
}

/// A server process: the group is resumed, killed and reaped on drop.
/// Watched from its start (see the module's docs).
pub struct Host {
    pub child: Child,
    pub addr: SocketAddr,
    watch: u64,
}

impl Host {
    /// Starts a server on `addr` (e.g. `127.0.0.2:0`) with `prefix` before
    /// the program (e.g. `ip netns exec NS`), waiting up to 30 s for it to
    /// listen.
    pub fn start(prefix: &[&str], addr: &str, work_ms: u64) -> Host {
        Self::start_with(prefix, addr, work_ms, None)
    }

    /// [`Host::start`] requiring `secret` of its clients.
    pub fn start_with(prefix: &[&str], addr: &str, work_ms: u64, secret: Option<&str>) -> Host {
        let exe = std::env::current_exe().expect("current_exe");
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push(exe.to_string_lossy().into_owned());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args([
                "--exact",
                "inner_serve",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SERVE_ENV, addr)
            .env(WORK_MS_ENV, work_ms.to_string())
            .env(SECRET_ENV, secret.unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn a server");
        // `ip netns exec NS ...`: the namespace goes too if the watchdog fires.
        let namespace = match prefix {
            ["ip", "netns", "exec", ns, ..] => Some(ns.to_string()),
            _ => None,
        };
        let watch = watch(child.id() as libc::pid_t, namespace);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let found = lines.by_ref().map_while(Result::ok).find_map(|l| {
                l.find("listening on ")
                    .map(|at| l[at + "listening on ".len()..].trim().to_string())
            });
            let _ = tx.send(found);
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut host = Host {
            child,
            addr: "0.0.0.0:0".parse().expect("addr"),
            watch,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(a)) => host.addr = a.parse().expect("server address"),
            other => panic!("server on {addr} did not start: {other:?}"),
        }
        host
    }

    /// Sends `signal` to the whole host: its process group, and the group
    /// each of its serving children leads (looked for before and after the
    /// host's signal: once stopped or dead it forks no more).
    pub fn signal(&self, signal: libc::c_int) {
        let rc = self.signal_all(signal);
        assert_eq!(rc, 0, "kill(-{}, {signal})", self.child.id());
    }

    /// `kill(2)` of the host's group (whose result it returns) and of its
    /// children's groups.
    fn signal_all(&self, signal: libc::c_int) -> i32 {
        let pgid = self.child.id() as libc::pid_t;
        let mut children = children_of(pgid);
        // SAFETY: kill(2) with plain integers; the group is ours (the child
        // leads it and is not reaped before drop).
        let rc = unsafe { libc::kill(-pgid, signal) };
        children.extend(children_of(pgid));
        for c in children {
            // SAFETY: as above: each leads its group (miniray's serving
            // children do) and is the host's child, reaped by it at most.
            unsafe { libc::kill(-c, signal) };
        }
        rc
    }
}

/// The processes whose parent is `pid`, from `/proc/*/stat`.
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // After the name: state, ppid.
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    == Some(&pid.to_string())
            })
        })
        .collect()
}

impl Drop for Host {
    fn drop(&mut self) {
        // Errors (the group is gone) are fine here.
        self.signal_all(libc::SIGCONT);
        self.signal_all(libc::SIGKILL);
        let _ = self.child.wait();
        unwatch(self.watch);
    }
}

/// An address on `ip` where nothing listens (a port just freed).
pub fn refusing_addr(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr")
}
