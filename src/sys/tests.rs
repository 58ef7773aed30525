//! The sys layer's own guarantees: `cvt`/`cvt_r`, `Argv`, `shutdown`,
//! `kill_group`'s refusals, `has_exited` leaving a zombie unreaped, and
//! the checks that make the `memmap2` maps safe.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use super::*;

#[test]
fn cvt_turns_minus_one_into_errno_and_passes_the_rest() {
    assert_eq!(cvt(0i32).ok(), Some(0));
    assert_eq!(cvt(7isize).ok(), Some(7));
    // An unused descriptor number: fcntl fails with EBADF.
    // SAFETY: F_GETFD only reads flags; -1 is never a descriptor.
    let e = cvt(unsafe { libc::fcntl(-1, libc::F_GETFD) }).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
}

#[test]
fn cvt_r_retries_eintr_and_stops_at_any_other_error() {
    let set_errno = |e| {
        // SAFETY: errno is this thread's own int, always valid to write.
        unsafe { *libc::__errno_location() = e };
    };
    let mut calls = 0;
    let r = cvt_r(|| {
        calls += 1;
        if calls < 3 {
            set_errno(libc::EINTR);
            -1i32
        } else {
            5
        }
    });
    assert_eq!((r.ok(), calls), (Some(5), 3));
    let mut calls = 0;
    let r = cvt_r(|| {
        calls += 1;
        set_errno(libc::EAGAIN);
        -1i32
    });
    assert_eq!(
        (r.unwrap_err().raw_os_error(), calls),
        (Some(libc::EAGAIN), 1)
    );
}

#[test]
fn argv_is_null_terminated_and_never_empty() {
    assert!(Argv::new(&[]).is_none());
    let args = [CString::new("prog").unwrap(), CString::new("-x").unwrap()];
    let argv = Argv::new(&args).expect("argv");
    assert_eq!(argv.ptrs.len(), 3);
    assert_eq!(argv.ptrs[0], args[0].as_ptr());
    assert_eq!(argv.ptrs[1], args[1].as_ptr());
    assert!(argv.ptrs[2].is_null());
}

#[test]
fn shutdown_ends_the_peers_stream_while_our_descriptor_stays_open() {
    let (a, mut b) = UnixStream::pair().expect("socketpair");
    shutdown(&a).expect("shutdown");
    let mut buf = [0u8; 8];
    // Read at once: EOF, not a block (the descriptor is still open here).
    assert_eq!(b.read(&mut buf).expect("read"), 0);
    assert!(fd_is_open(a.as_fd().as_raw_fd()));
    assert!(send_nosignal(&a, b"x").is_err());
}

fn memfd(len: u64, seals: libc::c_int) -> OwnedFd {
    let fd = memfd_create(c"sys-test").expect("memfd_create");
    fallocate(&fd, len).expect("fallocate");
    if seals != 0 {
        add_seals(&fd, seals).expect("seal");
    }
    fd
}

#[test]
fn a_sealed_memfd_maps_read_write_and_read_only() {
    let file =
        SealedFile::check(memfd(4096, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)).expect("sealed");
    assert_eq!(file.size(), 4096);
    let mut w = file.map_mut(4096).expect("map rw");
    w[4095] = 9;
    let r = file.map(4096).expect("map ro");
    assert_eq!(r[4095], 9);
    // A mapping longer than the file is refused: its tail has no backing.
    let e = file.map(3 * 4096).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    assert!(file.map_mut(4097).is_err());
    // Made here: sealed against shrinking and growing, not against sealing.
    let made = SealedFile::create(c"sys-test-made", 8192).expect("create");
    let seals = get_seals(&made).expect("seals");
    assert_eq!(seals, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW);
    assert_eq!(made.seals(), seals);
}

#[test]
fn a_map_that_could_raise_sigbus_is_refused() {
    // Not sealed against shrinking: a holder could truncate it under us.
    let unsealed = memfd(4096, 0);
    assert!(matches!(
        SealedFile::check(unsealed),
        Err(Unfit::Shrinkable)
    ));
    // No memfd at all: no seals to read.
    let (a, _b) = UnixStream::pair().expect("socketpair");
    assert!(matches!(
        SealedFile::check(OwnedFd::from(a)),
        Err(Unfit::NotSealable)
    ));
}

#[test]
fn write_sealing_waits_for_no_writable_mapping_and_a_private_map_is_none() {
    let mut file = SealedFile::create(c"sys-test-seal", 4096).expect("create");
    let w = file.map_mut(4096).expect("map rw");
    // Not copied into a worker another test forks meanwhile: that copy
    // would hold the region writable and make the seal below fail.
    // SAFETY: advice on a mapping this test owns, whole pages; it changes
    // only what a fork copies.
    let advised =
        unsafe { libc::madvise(w.as_ptr() as *mut libc::c_void, 4096, libc::MADV_DONTFORK) };
    assert_eq!(advised, 0, "madvise(MADV_DONTFORK)");
    let e = file.add_seals(libc::F_SEAL_WRITE).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
    drop(w);
    let r = file.map_private(4096).expect("map private");
    file.add_seals(libc::F_SEAL_WRITE)
        .expect("no writable mapping left");
    assert_eq!(file.seals() & libc::F_SEAL_WRITE, libc::F_SEAL_WRITE);
    assert!(file.map_mut(4096).is_err(), "write-sealed: no writable map");
    assert_eq!(file.map(4096).expect("map ro")[..], r[..]);
}

#[test]
fn more_descriptors_than_a_message_carries_are_refused_before_sendmsg() {
    let (a, _b) = UnixStream::pair().expect("socketpair");
    let many: Vec<_> = (0..=MAX_FDS_PER_MESSAGE).map(|_| a.as_fd()).collect();
    let e = send_with_fds(&a, b"x\n", &many).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let none: [BorrowedFd<'_>; 0] = [];
    assert!(send_with_fds(&a, b"x\n", &none).is_err());
}

/// A sealed memfd on hugetlbfs, or `None` where the kernel refuses
/// `MFD_HUGETLB` (no hugetlbfs support).
fn hugetlb_memfd() -> Option<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB;
    // SAFETY: the name is NUL-terminated; the descriptor is new and ours.
    let fd = cvt(unsafe { libc::memfd_create(c"sys-test-huge".as_ptr(), flags) }).ok()?;
    // SAFETY: just returned by the kernel, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(fd);
    // One 2 MiB huge page: the size is set without reserving a page.
    file.set_len(2 << 20).ok()?;
    let fd = OwnedFd::from(file);
    add_seals(&fd, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW).ok()?;
    Some(fd)
}

#[test]
fn a_hugetlbfs_memfd_is_refused_and_a_normal_one_passes_the_check() {
    // A normal memfd is on tmpfs (shmem): the check passes.
    let normal = memfd(4096, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW);
    assert!(!is_hugetlbfs(&normal).expect("fstatfs"));
    let Some(huge) = hugetlb_memfd() else {
        eprintln!("MFD_HUGETLB unsupported here: only the normal memfd was checked");
        return;
    };
    assert!(is_hugetlbfs(&huge).expect("fstatfs"));
    // After a normal memfd's device is known, a hugetlbfs one is still
    // looked at (another device).
    SealedFile::check(dup_cloexec(&normal).expect("dup")).expect("normal");
    let again = dup_cloexec(&huge).expect("dup");
    assert!(matches!(SealedFile::check(again), Err(Unfit::HugeTlb)));
    // Received as a region: refused with a typed error that names it.
    match crate::SharedMemory::from_fd(huge, 1, true) {
        Err(crate::Error::Region { reason }) => assert!(reason.contains("hugetlbfs"), "{reason}"),
        other => panic!("a hugetlbfs region must be refused: {other:?}"),
    }
}

#[test]
fn keepalive_sets_every_option_on_a_tcp_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let sock = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    set_keepalive(&sock, 3, 2, 4, 0).expect("setsockopt");
    let get = |level, name| get_int_opt(&sock, level, name).expect("getsockopt");
    assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 3);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 2);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 4);
    // No user timeout unless asked for: a busy peer is not a dead one.
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 0);
    set_keepalive(&sock, 3, 2, 4, 45_000).expect("setsockopt");
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 45_000);
}

#[test]
fn kill_group_refuses_the_callers_group_and_every_process() {
    // kill(0) would reach our own group and kill(-1) every process we may
    // signal: neither is ever a child's group. Signal 0 checks only.
    for pgid in [-5, 0, 1] {
        let e = kill_group(pgid, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "group {pgid}");
    }
}

#[test]
// Reaped by `wait` below, the call under test, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn has_exited_sees_a_zombie_without_reaping_it() {
    let child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !has_exited(pid).expect("a child of ours") {
        assert!(std::time::Instant::now() < end, "`true` never exited");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Still unreaped: asked again, and then reaped by waitpid.
    assert!(has_exited(pid).expect("still ours"));
    assert!(wait(pid).expect("reaped").success());
    assert!(has_exited(pid).is_err(), "ECHILD once reaped");
}
