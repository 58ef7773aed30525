//! A region message whose descriptors the kernel refuses is reported, never
//! dropped in silence: `sendmsg` fails with `ETOOMANYREFS` once the sending
//! user has more descriptors in flight than its open-file limit (root is
//! exempt, so the scenario runs in a process of its own as `nobody`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::wait_child;
use miniray::{
    Channel, ConnectOptions, Error, Reactor, ServerOptions, SharedMemory, Worker, WorkerOptions,
};
use serde_json::{json, Value};

const INNER_ENV: &str = "MINIRAY_SHM_REFUSED_INNER";
const ROUNDS: usize = 20;
const REGIONS: usize = 32;
const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn refused_descriptors_are_reported_and_nothing_else_is_lost() {
    // A copy of this test binary that `nobody` can run wherever the
    // checkout lives.
    let dir = std::env::temp_dir().join(format!("miniray-shm-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let exe = dir.join("inner");
    std::fs::copy(std::env::current_exe().expect("current_exe"), &exe).expect("copy test binary");
    for p in [&dir, &exe] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let mut command = Command::new(&exe);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Without CAP_SYS_RESOURCE/CAP_SYS_ADMIN the in-flight limit applies.
        command.uid(65534).gid(65534);
    }
    let mut child = command
        .args([
            "--exact",
            "inner_refused_descriptors",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the inner test");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, Duration::from_secs(120));
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    let _ = std::fs::remove_dir_all(&dir);
    let line = out
        .lines()
        .find_map(|l| l.find("RESULT ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no RESULT line ({status}): {out}\n{err}"));
    eprintln!("{line}");
    assert!(
        status.success(),
        "inner test failed ({status}): {out}\n{err}"
    );
}

fn region(k: usize) -> SharedMemory {
    let mut m = SharedMemory::create("refused", 4096).expect("create");
    m.as_mut_slice().expect("writable")[..8].copy_from_slice(&(k as u64).to_le_bytes());
    m
}

/// The body of the test above, run as `nobody` with a low open-file limit.
#[test]
#[ignore = "run by refused_descriptors_are_reported_and_nothing_else_is_lost as nobody"]
fn inner_refused_descriptors() {
    if std::env::var(INNER_ENV).is_err() {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: setrlimit reads the struct we pass; lowering needs no privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

    let mut r = Reactor::new().expect("reactor");
    let (mine, theirs) = UnixStream::pair().expect("side socket");
    mine.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let side = theirs.as_raw_fd();
    // The child reads nothing until told to, so descriptors pile up in flight.
    let w = r
        .spawn_channel(&WorkerOptions::new().keep_fd(side), move |ch| {
            // SAFETY: `side` is kept open in the child by keep_fd; this
            // UnixStream becomes its only owner here.
            let mut side = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(side) };
            let mut go = [0u8];
            side.read_exact(&mut go).map_err(|e| Error::Io {
                op: "read go",
                source: e,
            })?;
            let (mut plain, mut with_regions, mut errors) = (0, 0, 0);
            loop {
                match ch.recv_regions::<Value>() {
                    Ok(Some((_, regions))) if regions.len() == REGIONS => with_regions += 1,
                    Ok(Some(_)) => plain += 1,
                    Ok(None) => break,
                    Err(_) => errors += 1,
                }
            }
            let report = json!([plain, with_regions, errors]).to_string() + "\n";
            side.write_all(report.as_bytes()).map_err(|e| Error::Io {
                op: "write report",
                source: e,
            })?;
            Ok(())
        })
        .expect("spawn");
    drop(theirs);

    let regions: Vec<SharedMemory> = (0..REGIONS).map(region).collect();
    let refs: Vec<&SharedMemory> = regions.iter().collect();
    let mut refused = 0;
    let mut other = Vec::new();
    for j in 0..ROUNDS {
        r.send(w, &json!(format!("plain {j}"))).expect("send plain");
        r.send_regions(w, &json!(j), &refs).expect("queue regions");
        r.flush();
        while let Some(event) = r.try_recv::<Value>(w).transpose() {
            match event {
                Err(Error::Io { op, source })
                    if op == "sendmsg with region descriptors"
                        && source.raw_os_error() == Some(libc::ETOOMANYREFS) =>
                {
                    refused += 1
                }
                other_event => other.push(format!("{other_event:?}")),
            }
        }
    }
    (&mine).write_all(b"g").expect("go");
    r.send(w, &json!("end")).expect("send end");
    r.close(w).expect("close");
    let mut report = String::new();
    BufReader::new(&mine)
        .read_line(&mut report)
        .expect("the child's report");
    let counts: Value = serde_json::from_str(&report).expect("report json");
    let start = Instant::now();
    loop {
        match r.recv::<Value>(w, Some(DEADLINE.saturating_sub(start.elapsed()))) {
            Err(Error::Closed { .. }) => break,
            Err(Error::Timeout) => panic!("no Closed within {DEADLINE:?}"),
            e => other.push(format!("{e:?}")),
        }
    }
    println!(
        "RESULT refused={refused} child(plain, with_regions, errors)={counts} other={other:?}"
    );
    assert!(other.is_empty(), "unexpected events: {other:?}");
    assert!(
        refused >= 1,
        "the limit was never hit: the test proves nothing"
    );
    assert_eq!(counts[0], json!(ROUNDS + 1), "plain messages lost");
    assert_eq!(counts[2], json!(0), "the child saw errors");
    assert_eq!(
        counts[1].as_u64().map(|n| n as usize + refused),
        Some(ROUNDS),
        "every region message either arrived or was reported"
    );
}

/// A Python peer sends an envelope line with 33 descriptors, one with 32,
/// then a plain line.
const PY_33_THEN_32: &str = r#"
import fcntl, json, os, socket, sys
sock = socket.socket(fileno=1)
def send(n, tag):
    fds = []
    for k in range(n):
        fd = os.memfd_create("py", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 4096)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        fds.append(fd)
    data = (json.dumps({"miniray.regions": list(range(n)), "msg": tag}) + "\n").encode()
    sent = socket.send_fds(sock, [data], fds)
    sock.sendall(data[sent:])
    for fd in fds:
        os.close(fd)
send(33, "33")
send(32, "32")
sock.sendall(b'"after"\n')
sys.stdin.read()
"#;

#[test]
fn more_than_32_descriptors_fail_that_line_only() {
    let mut r = Reactor::new().expect("reactor");
    let exec = miniray::Exec::new("python3", ["-c", PY_33_THEN_32]).expect("exec");
    let w = r
        .spawn_exec(&WorkerOptions::new(), &exec)
        .expect("spawn python3");
    match r.recv_regions::<Value>(w, Some(DEADLINE)) {
        Err(Error::Region { reason }) => {
            assert!(reason.contains("more than 32"), "{reason}")
        }
        other => panic!("33 descriptors: {other:?}"),
    }
    let (msg, regions) = r.recv_regions(w, Some(DEADLINE)).expect("32 descriptors");
    assert_eq!((msg, regions.len()), (json!("32"), 32));
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("after"),
        json!("after")
    );
    r.close(w).expect("close");
    let start = Instant::now();
    loop {
        match r.recv::<Value>(w, Some(DEADLINE.saturating_sub(start.elapsed()))) {
            Err(Error::Closed { .. }) => break,
            other => assert!(
                start.elapsed() < DEADLINE,
                "no Closed within {DEADLINE:?}: {other:?}"
            ),
        }
    }
}

/// What a child's `Channel::send_regions` says to 33 regions: the refusal's
/// reason (or what happened instead), sent back as a plain message.
fn channel_refusal(ch: &mut Channel) -> miniray::Result<()> {
    let regions = (0..33)
        .map(|_| SharedMemory::create("many", 4096))
        .collect::<miniray::Result<Vec<_>>>()?;
    let refs: Vec<&SharedMemory> = regions.iter().collect();
    let said = match ch.send_regions(&json!("x"), &refs) {
        Err(Error::Region { reason }) => reason.to_owned(),
        other => format!("not refused: {other:?}"),
    };
    ch.send(&json!(said))
}

/// The reason `Reactor::send_regions` gives for 33 regions; nothing queued.
fn reactor_refusal(r: &mut Reactor, w: Worker, refs: &[&SharedMemory]) -> String {
    let said = match r.send_regions(w, &json!("x"), refs) {
        Err(Error::Region { reason }) => reason.to_owned(),
        other => format!("not refused: {other:?}"),
    };
    assert_eq!(r.pending_output(w).expect("pending"), 0, "{said}");
    said
}

#[test]
fn both_send_paths_refuse_in_the_same_order() {
    // Over TCP the transport is refused whatever the count; on a
    // socketpair, more than 32 regions are. The parent's and the child's
    // send paths check the same preconditions in the same order.
    let regions: Vec<SharedMemory> = (0..33)
        .map(|_| SharedMemory::create("many", 4096).expect("create"))
        .collect();
    let refs: Vec<&SharedMemory> = regions.iter().collect();
    let mut r = Reactor::new().expect("reactor");
    let local = r
        .spawn_channel(&WorkerOptions::new(), channel_refusal)
        .expect("spawn");
    let server = r
        .listen_channel("127.0.0.1:0", &ServerOptions::new(), channel_refusal)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let remote = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");

    let parent_local = reactor_refusal(&mut r, local, &refs);
    let parent_tcp = reactor_refusal(&mut r, remote, &refs);
    let child_local = r
        .recv::<Value>(local, Some(DEADLINE))
        .expect("local child's report");
    let child_tcp = r
        .recv::<Value>(remote, Some(DEADLINE))
        .expect("serving child's report");

    assert!(parent_local.contains("at most 32"), "{parent_local}");
    assert!(parent_tcp.contains("TCP"), "{parent_tcp}");
    assert_eq!(child_local, json!(parent_local));
    assert_eq!(child_tcp, json!(parent_tcp));
}
