//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Generous per-call deadline: the machines are shared and slow at times.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GETFL) only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "fcntl F_GETFL on {fd}");
    flags & libc::O_NONBLOCK != 0
}

pub fn is_cloexec(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags >= 0, "fcntl F_GETFD on {fd}");
    flags & libc::FD_CLOEXEC != 0
}

/// True once `pid` is no child of ours (reaped: `waitid` says ECHILD).
pub fn is_reaped(pid: i32) -> bool {
    // WNOWAIT: a zombie is looked at, not reaped (reaping it here would
    // make the next look say "reaped" whoever failed to reap it).
    // SAFETY: a zeroed siginfo_t is valid; WNOHANG never blocks.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// True while a process with this pid exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Waits until `cond` holds or the deadline passes; returns whether it held.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The targets of `/proc/<pid>/fd/*`.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                out.push(t.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The socket inode behind one of our descriptors, as `/proc` names it.
pub fn socket_name(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .expect("readlink")
        .to_string_lossy()
        .into_owned()
}

/// Python: `same(a, b)`, equality that also compares types (so `1 != 1.0`),
/// float reprs (so `-0.0 != 0.0`) and dict key order.
pub const PY_SAME: &str = r#"
def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b
"#;

/// An example program built by `cargo test` (integration tests live in
/// target/<profile>/deps, examples in target/<profile>/examples).
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join(name)
}

/// Drives the reactor and gathers server events until `done` holds for
/// what was gathered (within [`DEADLINE`]).
pub fn events_until(
    r: &mut miniray::Reactor,
    done: impl Fn(&[miniray::ServerEvent]) -> bool,
) -> Vec<miniray::ServerEvent> {
    let mut all = Vec::new();
    let end = Instant::now() + DEADLINE;
    while !done(&all) {
        assert!(Instant::now() < end, "events so far: {all:?}");
        r.wait_any(Some(Duration::from_millis(20)))
            .expect("wait_any");
        all.extend(r.take_server_events());
    }
    all
}

/// xorshift64*: deterministic randomness without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Waits for a child process to exit, up to `within`; kills and reaps it
/// (and fails the test) if it does not.
pub fn wait_child(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} still running after {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Gathers a host worker's messages for up to `wait` (at most 1000 of
/// them); any error but the timeout fails the test.
pub fn collect(
    r: &mut miniray::Reactor,
    host: miniray::Worker,
    into: &mut Vec<serde_json::Value>,
    wait: Duration,
) {
    let until = Instant::now() + wait;
    for _ in 0..1000 {
        match r.recv(host, Some(until.saturating_duration_since(Instant::now()))) {
            Ok(v) => into.push(v),
            Err(miniray::Error::Timeout) => return,
            Err(e) => panic!("host failed: {e}; events {into:?}"),
        }
    }
}

/// Open descriptors of this process.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// A server in a child process with a tight open-file limit, so accepting
/// soon fails with `EMFILE`: the host sends its port, then the names of its
/// server events (`accepted`, `exited`, `emfile-dropped`, `accept-failed`,
/// `other`) and `alive` after each wait, as messages.
pub fn emfile_host(r: &mut miniray::Reactor, backoff: Duration) -> (miniray::Worker, u16) {
    use miniray::{Error, ServerEvent, ServerOptions, WorkerOptions};
    use serde_json::json;
    let host = r
        .spawn_channel(&WorkerOptions::new(), move |ch| {
            let mut inner = miniray::Reactor::new()?;
            let opts = ServerOptions::new().accept_backoff(backoff);
            let s = inner.listen("127.0.0.1:0", &opts, |v: serde_json::Value| v)?;
            // Room for two connections' pidfds, and then some accept fails.
            let lim = libc::rlimit {
                rlim_cur: open_fds() + 2,
                rlim_max: 20_000,
            };
            // SAFETY: a valid rlimit struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
                return Err(Error::Closed { status: None });
            }
            ch.send(&json!(inner.server_addr(s)?.port()))?;
            loop {
                inner.wait_any(Some(Duration::from_millis(50)))?;
                for e in inner.take_server_events() {
                    let name = match e {
                        ServerEvent::Accepted { .. } => "accepted",
                        ServerEvent::Exited { .. } => "exited",
                        ServerEvent::AcceptFailed { dropped: true, .. } => "emfile-dropped",
                        ServerEvent::AcceptFailed { .. } => "accept-failed",
                        _ => "other",
                    };
                    ch.send(&json!(name))?;
                }
                ch.send(&json!("alive"))?;
            }
        })
        .expect("spawn host");
    let port = r
        .recv::<serde_json::Value>(host, Some(DEADLINE))
        .expect("port")
        .as_u64()
        .expect("u64") as u16;
    (host, port)
}

/// Opens clients to an [`emfile_host`] until it reports `emfile-dropped`
/// (within [`DEADLINE`] and 50 clients); returns them, open.
pub fn connect_until_emfile(
    r: &mut miniray::Reactor,
    host: miniray::Worker,
    port: u16,
    events: &mut Vec<serde_json::Value>,
) -> Vec<std::net::TcpStream> {
    let mut clients = Vec::new();
    let end = Instant::now() + DEADLINE;
    while !events.iter().any(|e| e == "emfile-dropped") {
        assert!(Instant::now() < end, "no EMFILE reported: {events:?}");
        assert!(clients.len() < 50, "EMFILE never happened: {events:?}");
        clients.push(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"));
        collect(r, host, events, Duration::from_millis(200));
    }
    clients
}

/// A child process that is killed and reaped when dropped, so a failing
/// assertion never leaves it behind.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-connection man in the middle in front of `server`: it accepts one
/// client, connects to `server`, and runs `up(client, server)` on a thread
/// of its own and `down(server, client)` on another (each copies one
/// direction, as it likes). Returns the address to connect to.
pub fn middle<U, D>(server: std::net::SocketAddr, up: U, down: D) -> std::net::SocketAddr
where
    U: FnOnce(std::net::TcpStream, std::net::TcpStream) + Send + 'static,
    D: FnOnce(std::net::TcpStream, std::net::TcpStream) + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let Ok(upstream) = std::net::TcpStream::connect(server) else {
            return;
        };
        let (c2, u2) = (
            client.try_clone().expect("clone"),
            upstream.try_clone().expect("clone"),
        );
        let up = std::thread::spawn(move || up(client, upstream));
        down(u2, c2);
        let _ = up.join();
    });
    addr
}

/// One test at a time, for the tests of a binary that seal regions: a
/// worker one test forks inherits every mapping of the process, a region
/// another test has not sealed yet included, and holds it writable until it
/// exits, so that test's seal would be refused (`EBUSY`, as
/// `SharedMemory::seal_read_only` documents for a program that forks while
/// a region is writable).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
