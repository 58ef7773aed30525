//! The system calls miniray makes that std does not wrap. Every `unsafe`
//! block of the crate is here (but the two `memmap2` maps in `shm.rs`),
//! each with its reason. This file holds processes, signals, descriptors
//! and limits; `socket.rs` the socket I/O (`MSG_NOSIGNAL`, `SCM_RIGHTS`,
//! peeking); `memfd.rs` sealed memory files. Their functions are re-exported
//! here, so callers name them all `sys::...`.

mod memfd;
mod socket;

pub(crate) use memfd::*;
pub(crate) use socket::*;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Where `fork` left us.
pub(crate) enum Forked {
    /// In the new process.
    Child,
    /// In the caller, with the child's pid.
    Parent(libc::pid_t),
}

/// `fork(2)`.
///
/// The caller's child branch must only make async-signal-safe calls until it
/// has closed the inherited descriptors, and must leave with [`exit_now`],
/// never by returning or unwinding: other threads of the parent do not exist
/// in the child, and destructors would close descriptors the child does not own.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the
    // obligations on the child branch are stated above and kept by
    // `worker::spawn_child`, the only caller.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `_exit(2)`: leaves the process without running destructors or atexit hooks.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// In a child: ask for `signal` when the parent (the forking thread) dies,
/// then close the race where the parent died before the call. Exits the
/// child at once with `gone` if the parent is already gone.
pub(crate) fn set_parent_death_signal(signal: libc::c_int, parent: libc::pid_t, gone: i32) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers; async-signal-safe.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    // SAFETY: getppid has no preconditions; async-signal-safe.
    let ppid = unsafe { libc::getppid() };
    if r == -1 || ppid != parent {
        exit_now(gone);
    }
}

/// In a child: close every descriptor from 3 up except those in `keep`
/// (sorted, deduplicated). Uses `close_range(2)`; falls back to `close(2)`
/// over the descriptor table on kernels without it. Async-signal-safe, and
/// panic-free for any input: negative numbers keep nothing, and no
/// arithmetic can overflow.
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let mut low: libc::c_uint = 3;
    for &fd in keep {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd < low {
            continue;
        }
        if fd > low {
            // fd > low >= 3, so fd - 1 cannot wrap.
            close_range(low, fd - 1);
        }
        match fd.checked_add(1) {
            Some(next) => low = next,
            None => return,
        }
    }
    close_range(low, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: close_range only closes descriptors; the caller (a freshly
    // forked child) owns no Rust object that will use them again.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if r == 0 {
        return;
    }
    // No close_range (Linux < 5.9): close one by one up to the table size.
    // SAFETY: getdtablesize has no preconditions.
    let table = unsafe { libc::getdtablesize() }.max(0) as libc::c_uint;
    let mut fd = first;
    while fd <= last && fd < table {
        // SAFETY: as above; EBADF for unused numbers is harmless.
        unsafe { libc::close(fd as libc::c_int) };
        fd += 1;
    }
}

/// In a child: unblock every signal.
pub(crate) fn unblock_all_signals() {
    // SAFETY: sigemptyset initialises the set; sigprocmask with a valid set
    // and a null old-set pointer. Both are async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// In a child about to exec: `SIGPIPE` back to its default disposition.
/// Rust ignores it in every process and an ignored signal stays ignored
/// across `execve`, so a program run by `execvp` would get `EPIPE` instead
/// of dying quietly (`yes | head` printing "Broken pipe"). Other ignored
/// signals are inherited, as with `std::process::Command` (so `nohup`
/// keeps working). Async-signal-safe.
pub(crate) fn reset_sigpipe() {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); SIG_DFL as
    // the handler; a null old-action pointer. sigaction is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
    }
}

/// The errno of the last failed call, in a child (no allocation).
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A close-on-exec pipe for an exec worker to report a failed `execvp`:
/// `(read end, write end)`, the write end numbered 3 or above so that
/// making the socket stdin and stdout can never overwrite it.
pub(crate) fn exec_error_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both were just returned by the kernel; nothing else owns them.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if fds[1] >= 3 {
        return Ok((r, w));
    }
    // SAFETY: plain integers; the new descriptor is ours.
    let high = cvt(unsafe { libc::fcntl(fds[1], libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: just returned by the kernel, owned by nothing else.
    Ok((r, unsafe { OwnedFd::from_raw_fd(high) }))
}

/// In the parent: waits until the exec worker's child execs (the pipe's
/// write end closes on exec: `Ok(None)`) or reports why it could not
/// (`Ok(Some(errno))`). The caller must have closed its own write end.
pub(crate) fn read_exec_error(pipe: RawFd) -> io::Result<Option<i32>> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads at most the rest of our 4-byte buffer.
        let n = unsafe { libc::read(pipe, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(match got {
        0 => None,
        4 => Some(i32::from_ne_bytes(buf)),
        // A torn report (cannot happen for 4 bytes on a pipe): still a failure.
        _ => Some(libc::EIO),
    })
}

/// In a child: writes all of `buf` to `fd` with `write(2)`, retrying short
/// writes and `EINTR`, ignoring other errors. No lock, no allocation:
/// async-signal-safe.
pub(crate) fn write_all_raw(fd: RawFd, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        // SAFETY: writes from a valid slice of its own length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            done += n as usize;
        } else if n == 0 || errno() != libc::EINTR {
            return;
        }
    }
}

/// In a child: make `sock` stdin and stdout, close every other descriptor
/// from 3 up except `keep` (sorted; includes `keep_user` and `error_pipe`),
/// clear close-on-exec on `keep_user` (the caller's `keep_fd`s), reset
/// `SIGPIPE` (see [`reset_sigpipe`]; the mask was cleared before) and exec
/// `argv` (null-terminated, `argv[0]` looked up in `PATH`). Never returns:
/// if any step fails, its errno is written to `error_pipe` (close-on-exec,
/// so a successful exec closes it with nothing written) and the child exits
/// 127.
pub(crate) fn exec_with_socket(
    sock: RawFd,
    keep: &[RawFd],
    keep_user: &[RawFd],
    argv: &[*const libc::c_char],
    error_pipe: RawFd,
) -> ! {
    let fail = |errno: i32| -> ! {
        write_all_raw(error_pipe, &errno.to_ne_bytes());
        exit_now(127)
    };
    // Prepared before fork with a trailing null; checked, not indexed, so
    // this path cannot panic.
    let Some(&program) = argv.first() else {
        fail(libc::EINVAL)
    };
    if program.is_null() || argv.last().is_some_and(|p| !p.is_null()) {
        fail(libc::EINVAL)
    }
    // SAFETY: plain descriptor calls on numbers this child owns; argv is a
    // null-terminated array of pointers to NUL-terminated strings prepared
    // before fork and alive in this copy of memory. All are async-signal-safe
    // except execvp's PATH search, which glibc does on the stack.
    unsafe {
        // dup2 onto 0 and 1 needs no free slot, so a parent at its
        // open-file limit can still start a program; only a socket that is
        // 0 or 1 itself is first moved above 2 (then 0 or 1 was free).
        let src = if sock <= 1 {
            libc::fcntl(sock, libc::F_DUPFD_CLOEXEC, 3)
        } else {
            sock
        };
        if src < 0 || libc::dup2(src, 0) < 0 || libc::dup2(src, 1) < 0 {
            fail(errno())
        }
        close_fds_except(keep);
        for &fd in keep_user {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        reset_sigpipe();
        libc::execvp(program, argv.as_ptr());
    }
    fail(errno())
}

/// `fcntl(F_GETFD)`: true if `fd` is an open descriptor of this process.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; EBADF if not open.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// `waitpid(pid, WNOHANG)`: `Ok(None)` while the child runs.
pub(crate) fn try_wait(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer; pid names one child of ours.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match r {
            0 => return Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            _ => return Ok(Some(ExitStatus::from_raw(status))),
        }
    }
}

/// `waitpid(pid, 0)`: blocks until the child exits.
pub(crate) fn wait(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: as in try_wait.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r != -1 {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `kill(2)`.
pub(crate) fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers. The pid is a child not yet reaped,
    // so it cannot have been reused.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// `pidfd_open(2)`: a descriptor that reads ready when the child exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The soft open-file limit (`RLIMIT_NOFILE`); `u64::MAX` when unlimited or
/// unknown. Sizes how many pidfds are opened at spawn.
pub(crate) fn open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer.
    match cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }) {
        Ok(_) if lim.rlim_cur != libc::RLIM_INFINITY => lim.rlim_cur,
        _ => u64::MAX,
    }
}

/// `getpid(2)`.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

/// Raises the soft open-file limit to the hard limit and returns the new
/// soft limit. Each local worker costs its parent one descriptor while it
/// runs, so a program with thousands of workers needs this.
///
/// System calls: `getrlimit`, `setrlimit`.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: lim is a valid, initialised rlimit.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

/// `poll(2)` on one descriptor for readability, up to `timeout` (at least
/// 1 ms; at most `i32::MAX` ms, about 24 days: callers with a longer or no
/// deadline loop).
pub(crate) fn poll_readable(fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, count 1.
    let n = cvt(unsafe { libc::poll(&mut p, 1, ms.max(1)) })?;
    Ok(n == 1)
}

/// `getrandom(2)`: fills `buf` from the kernel's CSPRNG.
pub(crate) fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes at most the remaining length into our buffer.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            done += n as usize;
        }
    }
    Ok(())
}
