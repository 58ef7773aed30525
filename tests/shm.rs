//! SharedMemory: sealed memfd regions inherited at spawn or sent with
//! messages over the worker's socketpair (SCM_RIGHTS).

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::DEADLINE;
use miniray::{ConnectOptions, Error, Reactor, ServerOptions, SharedMemory, WorkerOptions};
use serde_json::{json, Value};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn inherited_region_is_shared_both_ways() {
    let mut region = SharedMemory::create("inherited", 1 << 20).expect("create");
    region.as_mut_slice().expect("rw")[..4].copy_from_slice(b"ping");
    let mut r = Reactor::new().expect("reactor");
    let shared = &region;
    let w = r
        .spawn_channel(&WorkerOptions::new().region(shared), |ch| {
            while let Some(_msg) = ch.recv::<Value>()? {
                let seen = String::from_utf8_lossy(&shared.as_slice()[..4]).into_owned();
                // Write through a second handle to the same pages.
                let mut mine = shared.try_clone()?;
                if let Some(bytes) = mine.as_mut_slice() {
                    bytes[4..8].copy_from_slice(b"pong");
                }
                ch.send(&json!(seen))?;
            }
            Ok(())
        })
        .expect("spawn");
    r.send(w, &json!("look")).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
        json!("ping")
    );
    assert_eq!(&region.as_slice()[4..8], b"pong");
}

#[test]
fn region_sent_to_a_running_worker_and_back() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            while let Some((msg, mut regions)) = ch.recv_regions::<Value>()? {
                let Some(region) = regions.first_mut() else {
                    ch.send(&json!("no region"))?;
                    continue;
                };
                assert_eq!(Some(region.id()), msg["region"].as_u64());
                let sum: u64 = region.as_slice().iter().map(|&b| u64::from(b)).sum();
                // Child → parent: write into it, and send a new region of our own.
                if let Some(bytes) = region.as_mut_slice() {
                    bytes[0] = 42;
                }
                let mut reply = SharedMemory::create("from-child", 4096)?;
                if let Some(bytes) = reply.as_mut_slice() {
                    bytes[..5].copy_from_slice(b"child");
                }
                ch.send_regions(&json!({"sum": sum, "region": reply.id()}), &[&reply])?;
            }
            Ok(())
        })
        .expect("spawn");
    let mut region = SharedMemory::create("to-child", 3 * 4096).expect("create");
    region.as_mut_slice().expect("rw").fill(1);
    r.send_regions(w, &json!({"region": region.id()}), &[&region])
        .expect("send_regions");
    let (reply, regions) = r.recv_regions::<Value>(w, Some(DEADLINE)).expect("reply");
    assert_eq!(reply["sum"], json!(3 * 4096));
    assert_eq!(region.as_slice()[0], 42, "the child's write is visible");
    assert_eq!(regions.len(), 1);
    assert_eq!(Some(regions[0].id()), reply["region"].as_u64());
    assert_eq!(&regions[0].as_slice()[..5], b"child");
}

#[test]
fn a_received_region_cannot_be_shrunk_or_grown() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            while let Some((_, regions)) = ch.recv_regions::<Value>()? {
                let fd = regions[0].as_raw_fd();
                // SAFETY: ftruncate on a descriptor we hold.
                let shrink = unsafe { libc::ftruncate(fd, 0) } == 0;
                // SAFETY: as above.
                let grow = unsafe { libc::ftruncate(fd, 1 << 30) } == 0;
                let last = regions[0].as_slice()[regions[0].len() - 1];
                ch.send(&json!({"shrunk": shrink, "grew": grow, "last": last}))?;
            }
            Ok(())
        })
        .expect("spawn");
    let mut region = SharedMemory::create("sealed", 8192).expect("create");
    region.as_mut_slice().expect("rw")[8191] = 7;
    r.send_regions(w, &json!(null), &[&region]).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
        json!({"shrunk": false, "grew": false, "last": 7})
    );
    assert_eq!(region.len(), 8192);
}

#[test]
fn unsealed_or_foreign_descriptors_are_refused() {
    // A memfd without seals could shrink under a mapping: refused.
    let name = std::ffi::CString::new("unsealed").expect("name");
    // SAFETY: memfd_create with a valid name; the descriptor is ours.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: raw was just returned by the kernel and is owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own memfd.
    assert_eq!(unsafe { libc::ftruncate(raw, 4096) }, 0);
    assert!(matches!(
        SharedMemory::from_fd(fd, 1, false),
        Err(Error::Region { .. })
    ));
    let file = std::fs::File::open("/proc/self/stat").expect("a plain file");
    assert!(matches!(
        SharedMemory::from_fd(file.into(), 2, false),
        Err(Error::Region { .. })
    ));
    assert!(SharedMemory::create("empty", 0).is_err());
}

/// The sending side: a reactor with one receiving worker; hands one region
/// over `n` times and reports both processes' descriptor counts.
fn handoffs(n: u64) -> miniray::Result<serde_json::Value> {
    let mut r = Reactor::new()?;
    let w = r.spawn_channel(&WorkerOptions::new(), |ch| {
        let before = fd_count();
        let mut got = 0u64;
        while let Some((msg, regions)) = ch.recv_regions::<Value>()? {
            if msg == json!("count") {
                ch.send(&json!({"before": before, "after": fd_count(), "n": got}))?;
                continue;
            }
            got += regions.len() as u64;
            ch.send(&json!(regions.len()))?;
        }
        Ok(())
    })?;
    let region = SharedMemory::create("handoff", 4096)?;
    let before = fd_count();
    for i in 0..n {
        r.send_regions(w, &json!({"i": i, "region": region.id()}), &[&region])?;
        if r.recv::<Value>(w, Some(DEADLINE))? != json!(1) {
            return Err(Error::Region {
                reason: "region missing",
            });
        }
    }
    let after = fd_count();
    r.send(w, &json!("count"))?;
    let child = r.recv::<Value>(w, Some(DEADLINE))?;
    Ok(json!({"parent": {"before": before, "after": after}, "child": child}))
}

#[test]
fn ten_thousand_handoffs_leak_no_descriptor() {
    // Both sides run in processes of their own, so other tests' descriptors
    // (this harness runs tests on threads) cannot blur the counts.
    let mut r = Reactor::new().expect("reactor");
    let host = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let report = handoffs(10_000)?;
            ch.send(&report)
        })
        .expect("spawn");
    let report = r
        .recv::<Value>(host, Some(Duration::from_secs(120)))
        .expect("report");
    assert_eq!(report["child"]["n"], json!(10_000), "{report}");
    assert_eq!(
        report["parent"]["before"], report["parent"]["after"],
        "{report}"
    );
    assert_eq!(
        report["child"]["before"], report["child"]["after"],
        "{report}"
    );
}

#[test]
fn msg_ctrunc_fails_that_message_only_and_leaks_nothing() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let before = fd_count();
            // No new descriptor can be installed: SCM_RIGHTS will be truncated.
            let tight = libc::rlimit {
                rlim_cur: 3,
                rlim_max: 20_000,
            };
            let roomy = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 20_000,
            };
            // SAFETY: valid rlimit structs.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) };
            let first = ch.recv_regions::<Value>();
            // SAFETY: as above.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &roomy) };
            let first = match first {
                Err(Error::Region { reason }) => format!("region error: {reason}"),
                other => format!("unexpected: {other:?}"),
            };
            let second = match ch.recv_regions::<Value>()? {
                Some((msg, regions)) => json!({"msg": msg, "regions": regions.len()}),
                None => json!(null),
            };
            ch.send(&json!({"first": first, "second": second}))?;
            let after = fd_count();
            ch.send(&json!({"before": before, "after": after}))?;
            Ok(())
        })
        .expect("spawn");
    let region = SharedMemory::create("ctrunc", 4096).expect("create");
    r.send_regions(w, &json!("lost"), &[&region])
        .expect("send 1");
    r.send_regions(w, &json!("kept"), &[&region])
        .expect("send 2");
    let report = r.recv::<Value>(w, Some(DEADLINE)).expect("report");
    let first = report["first"].as_str().expect("text");
    assert!(
        first.starts_with("region error") && first.contains("MSG_CTRUNC"),
        "{first}"
    );
    assert_eq!(report["second"], json!({"msg": "kept", "regions": 1}));
    let counts = r.recv::<Value>(w, Some(DEADLINE)).expect("counts");
    assert_eq!(counts["before"], counts["after"]);
}

#[test]
fn regions_to_a_remote_worker_are_refused_and_nothing_is_sent() {
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let w = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    let region = SharedMemory::create("no-tcp", 4096).expect("create");
    assert!(matches!(
        r.send_regions(w, &json!("x"), &[&region]),
        Err(Error::Region { .. })
    ));
    assert_eq!(r.pending_output(w).expect("pending"), 0);
    // The connection is unharmed.
    r.send(w, &json!("still here")).expect("send");
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("echo"),
        json!("still here")
    );
}

/// A Python exec worker that speaks the region wire form with
/// `socket.recv_fds` / `socket.send_fds`: it reads the region it gets, and
/// answers with a memfd of its own, sealed against writes too.
const PYTHON_PEER: &str = r#"
import fcntl, json, mmap, os, socket
sock = socket.socket(fileno=0)
buf, fds = b"", []
while True:
    data, got, flags, _ = socket.recv_fds(sock, 65536, 32)
    if not data:
        break
    buf += data
    fds.extend(got)
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        env = json.loads(line)
        ids = env["miniray.regions"]
        mine, fds = fds[:len(ids)], fds[len(ids):]
        with mmap.mmap(mine[0], os.fstat(mine[0]).st_size) as m:
            head = m[:8].decode()
            m[8:14] = b"python"
        os.close(mine[0])
        fd = os.memfd_create("py", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 4096)
        os.pwrite(fd, b"from python", 0)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        reply = {"miniray.regions": [7], "msg": {"head": head, "msg": env["msg"]}}
        socket.send_fds(sock, [json.dumps(reply).encode() + b"\n"], [fd])
        os.close(fd)
"#;

#[test]
fn python_peer_uses_the_region_wire_form() {
    let mut r = Reactor::new().expect("reactor");
    let exec = miniray::Exec::new("python3", ["-c", PYTHON_PEER]).expect("exec");
    let w = r.spawn_exec(&WorkerOptions::new(), &exec).expect("spawn");
    let mut region = SharedMemory::create("to-python", 4096).expect("create");
    region.as_mut_slice().expect("rw")[..8].copy_from_slice(b"miniray!");
    r.send_regions(w, &json!({"n": 1}), &[&region])
        .expect("send");
    let (reply, regions) = r.recv_regions::<Value>(w, Some(DEADLINE)).expect("reply");
    assert_eq!(reply, json!({"head": "miniray!", "msg": {"n": 1}}));
    assert_eq!(
        &region.as_slice()[8..14],
        b"python",
        "Python wrote into our region"
    );
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0].id(), 7);
    assert_eq!(&regions[0].as_slice()[..11], b"from python");
    // Python sealed it against writes: we map it read-only.
    assert!(!regions[0].is_writable());
}
