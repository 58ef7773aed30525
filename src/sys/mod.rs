//! The system calls miniray makes that std does not wrap. Every `unsafe`
//! block of the crate is here, each with its reason, but one: the call of
//! the one `unsafe fn`, [`fork`], in `fork.rs`, whose obligations only that
//! caller can keep. This file holds processes, signals, descriptors and
//! limits; `socket.rs` the socket I/O (`MSG_NOSIGNAL`, `SCM_RIGHTS`,
//! peeking); `memfd.rs` sealed memory files and their `memmap2` mappings;
//! `timer.rs` the reactor's deadline timer (`timerfd`).
//! Their functions are re-exported here, so callers name them all `sys::...`.
//!
//! Safe by construction: a descriptor that is only borrowed for the call is
//! an [`AsFd`] parameter (a [`BorrowedFd`] inside), so no call can name a
//! closed or foreign number; a raw number ([`RawFd`]) is taken only where
//! the call is about numbers (the descriptors a child keeps, whether a
//! number is open, stderr in a child that may have closed it). Every checked
//! return value goes through [`cvt`] (or [`cvt_r`], which retries `EINTR`)
//! rather than a hand-written `< 0` test; a few are deliberately ignored
//! where nothing could be done about a failure (the child's `sigprocmask`
//! and `sigaction` resets, `fcntl(F_SETFD)` on the kept descriptors before
//! exec, a fallback `close`).

mod memfd;
mod proc;
mod socket;
mod timer;

pub(crate) use memfd::*;
pub(crate) use proc::waits_for_input;
pub(crate) use socket::*;
pub(crate) use timer::Timer;

use std::ffi::{CStr, CString};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// The integer types system calls return, where `-1` means "see `errno`".
pub(crate) trait SysResult: Copy {
    /// True for the failure value `-1`.
    fn is_minus_one(self) -> bool;
}

macro_rules! sys_result {
    ($($t:ty)*) => {$(
        impl SysResult for $t {
            fn is_minus_one(self) -> bool {
                self == -1
            }
        }
    )*};
}
sys_result!(i32 i64 isize);

/// A system call's return value as a `Result`: `-1` becomes `errno` as an
/// [`io::Error`] (no allocation: async-signal-safe), anything else is `Ok`.
pub(crate) fn cvt<T: SysResult>(r: T) -> io::Result<T> {
    if r.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`cvt`] of `call()`, calling again while it fails with `EINTR`.
pub(crate) fn cvt_r<T: SysResult>(mut call: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(call()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// `usize` from a byte count [`cvt`] has checked (never negative).
fn len(n: isize) -> usize {
    n.unsigned_abs()
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
/// # Safety
///
/// In [`Forked::Child`] only the forking thread exists, in a copy of the
/// parent's memory where other threads may have held locks (the allocator's,
/// stdout's, the panic hook's). The caller's child branch must therefore:
///
/// - make only async-signal-safe calls (no allocation, no lock) until it has
///   closed the inherited descriptors and may run user code; anything it
///   needs (such as an [`Argv`]) is built before the fork;
/// - leave with [`exit_now`] (or a successful `exec`), never by returning or
///   unwinding into the caller's frames: their destructors would run in the
///   child and close or free what the parent owns.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: fork itself has no memory-safety preconditions; the child's
    // obligations are this function's `# Safety` contract, kept by the caller.
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// An argument vector prepared for `execvp` before `fork`: the
/// null-terminated array of pointers to the program's NUL-terminated
/// arguments, never empty. The strings are borrowed (`'a`), so they outlive
/// it; after the fork the child only reads the pointers, allocating nothing.
pub(crate) struct Argv<'a> {
    /// `args[0]..args[n-1]`, then a null pointer.
    ptrs: Vec<*const libc::c_char>,
    strings: PhantomData<&'a CStr>,
}

impl<'a> Argv<'a> {
    /// The vector for `args` (program first); `None` if `args` is empty.
    pub(crate) fn new(args: &'a [CString]) -> Option<Self> {
        if args.is_empty() {
            return None;
        }
        let ptrs = args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Some(Argv {
            ptrs,
            strings: PhantomData,
        })
    }
}

/// An environment prepared for `execvpe` before `fork`: the
/// null-terminated array of pointers to `KEY=VALUE` strings (perhaps none).
/// Borrowed as [`Argv`]'s are.
pub(crate) struct Envp<'a> {
    /// `vars[0]..vars[n-1]`, then a null pointer.
    ptrs: Vec<*const libc::c_char>,
    strings: PhantomData<&'a CStr>,
}

impl<'a> Envp<'a> {
    /// The array for `vars`.
    pub(crate) fn new(vars: &'a [CString]) -> Self {
        let ptrs = vars
            .iter()
            .map(|v| v.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Envp {
            ptrs,
            strings: PhantomData,
        }
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
    let r = cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) });
    // SAFETY: getppid has no preconditions; async-signal-safe.
    let ppid = unsafe { libc::getppid() };
    if r.is_err() || ppid != parent {
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
    let r = cvt(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) });
    if r.is_ok() {
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

/// The errno of a failed call, in a child (no allocation).
fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
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
pub(crate) fn read_exec_error(pipe: impl AsFd) -> io::Result<Option<i32>> {
    let pipe = pipe.as_fd().as_raw_fd();
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: reads at most rest.len() bytes into rest; the pipe is
        // borrowed, so open for the call.
        let n = cvt_r(|| unsafe { libc::read(pipe, rest.as_mut_ptr().cast(), rest.len()) })?;
        if n == 0 {
            break;
        }
        got += len(n);
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
/// async-signal-safe. A raw number, not a borrowed descriptor: the caller
/// writes to stderr (2), which the child's program may have closed, and a
/// write to a closed number is only `EBADF`.
pub(crate) fn write_all_raw(fd: RawFd, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        // SAFETY: writes from a valid slice of its own length.
        match cvt_r(|| unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) }) {
            Ok(n) if n > 0 => done += len(n),
            _ => return,
        }
    }
}

/// In a child: make `sock` stdin and stdout, close every other descriptor
/// from 3 up except `keep` (sorted; includes `keep_user` and `error_pipe`),
/// clear close-on-exec on `keep_user` (the caller's `keep_fd`s), reset
/// `SIGPIPE` (see [`reset_sigpipe`]; the mask was cleared before) and exec
/// `argv` (`argv[0]` looked up in `PATH`). Never returns: if any step fails,
/// its errno is written to `error_pipe` (close-on-exec, so a successful exec
/// closes it with nothing written) and the child exits `failed_code`
/// (the caller passes [`EXIT_EXEC_FAILED`](crate::process::EXIT_EXEC_FAILED);
/// a parameter because `process` builds on `sys`, not the other way).
/// `keep` and `keep_user` are numbers: what they name is the subject of
/// the call.
pub(crate) fn exec_with_socket(
    sock: BorrowedFd<'_>,
    keep: &[RawFd],
    keep_user: &[RawFd],
    argv: &Argv<'_>,
    envp: &Envp<'_>,
    error_pipe: BorrowedFd<'_>,
    failed_code: i32,
) -> ! {
    let fail = |e: io::Error| -> ! {
        write_all_raw(error_pipe.as_raw_fd(), &errno_of(&e).to_ne_bytes());
        exit_now(failed_code)
    };
    let sock = sock.as_raw_fd();
    // dup2 onto 0 and 1 needs no free slot, so a parent at its open-file
    // limit can still start a program; only a socket that is 0 or 1 itself
    // is first moved above 2 (then 0 or 1 was free).
    let src = if sock <= 1 {
        // SAFETY: plain integers on a descriptor this child owns; the
        // duplicate is left to the exec (close-on-exec).
        match cvt(unsafe { libc::fcntl(sock, libc::F_DUPFD_CLOEXEC, 3) }) {
            Ok(fd) => fd,
            Err(e) => fail(e),
        }
    } else {
        sock
    };
    // SAFETY: dup2 onto 0 and 1, which no Rust object of this child owns
    // (stdin and stdout are only ever borrowed); async-signal-safe.
    let dup = |to| cvt(unsafe { libc::dup2(src, to) });
    if let Err(e) = dup(0).and_then(|_| dup(1)) {
        fail(e)
    }
    close_fds_except(keep);
    for &fd in keep_user {
        // SAFETY: clears a flag on a number the caller asked to keep; EBADF
        // if it is not open (checked before fork) is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    reset_sigpipe();
    let program = argv.ptrs.first().copied().unwrap_or(std::ptr::null());
    // SAFETY: `Argv` guarantees a non-empty, null-terminated array of
    // pointers to NUL-terminated strings, `Envp` a null-terminated one,
    // both prepared before fork and alive in this copy of memory (they
    // borrow them). execvpe does its PATH search on the stack (glibc); it
    // returns only on failure.
    unsafe { libc::execvpe(program, argv.ptrs.as_ptr(), envp.ptrs.as_ptr()) };
    fail(io::Error::last_os_error())
}

/// `fcntl(F_GETFD)`: true if `fd` is an open descriptor of this process.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; EBADF if not open.
    fd >= 0 && cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) }).is_ok()
}

/// `waitpid(pid, WNOHANG)`: `Ok(None)` while the child runs.
pub(crate) fn try_wait(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer; pid names one child of ours.
    let r = cvt_r(|| unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) })?;
    Ok((r != 0).then(|| ExitStatus::from_raw(status)))
}

/// `waitpid(pid, 0)`: blocks until the child exits.
pub(crate) fn wait(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let mut status = 0;
    // SAFETY: as in try_wait.
    cvt_r(|| unsafe { libc::waitpid(pid, &mut status, 0) })?;
    Ok(ExitStatus::from_raw(status))
}

/// `kill(2)`.
pub(crate) fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers. The pid is a child not yet reaped,
    // so it cannot have been reused.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// `kill(-pgid, signal)`: every process of the process group `pgid`.
/// `pgid` 0 and 1 are refused (`InvalidInput`): `kill(0)` is the caller's
/// own group and `kill(-1)` every process it may signal, never what a
/// caller of this function means. The caller keeps the number from being
/// reused: it names the group of a child of ours not yet reaped (a group
/// is named after its leader, and a zombie leader still holds its pid).
pub(crate) fn kill_group(pgid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a process group of a child",
        ));
    }
    // SAFETY: kill takes plain integers; -pgid (pgid > 1) names one group.
    cvt(unsafe { libc::kill(-pgid, signal) }).map(drop)
}

/// `setpgid(2)`: moves `pid` (0: the caller) into the group `pgid` (0: a
/// new group named after `pid`). Async-signal-safe: a forked child calls
/// `setpgid(0, 0)` before anything else.
pub(crate) fn setpgid(pid: libc::pid_t, pgid: libc::pid_t) -> io::Result<()> {
    // SAFETY: setpgid takes plain integers; async-signal-safe.
    cvt(unsafe { libc::setpgid(pid, pgid) }).map(drop)
}

/// `getpgid(2)`: the process group of `pid`.
pub(crate) fn getpgid(pid: libc::pid_t) -> io::Result<libc::pid_t> {
    // SAFETY: getpgid takes a plain integer.
    cvt(unsafe { libc::getpgid(pid) })
}

/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`: true once the child
/// has exited, leaving it unreaped (a zombie, still holding its pid, so
/// its group can still be signalled); false while it runs.
pub(crate) fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: a zeroed siginfo_t is a valid value (WNOHANG leaves it zeroed
    // when no child has exited, which `si_pid` 0 tells).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: info is a valid out-pointer; pid names one child of ours.
    cvt_r(|| unsafe { libc::waitid(libc::P_PID, id, &mut info, flags) })?;
    // SAFETY: waitid filled info (or left it zeroed); si_pid reads the
    // child fields, which are what waitid writes.
    Ok(unsafe { info.si_pid() } != 0)
}

/// `pidfd_open(2)`: a descriptor that reads ready when the child exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
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
pub(crate) fn poll_readable(fd: impl AsFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
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
        let rest = &mut buf[done..];
        // SAFETY: writes at most rest.len() bytes into rest.
        done += len(cvt_r(|| unsafe {
            libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0)
        })?);
    }
    Ok(())
}

/// `shutdown(fd, SHUT_RDWR)`: the peer reads end-of-file and its writes
/// fail, though the descriptor stays open (a Unix socket and TCP alike).
pub(crate) fn shutdown(sock: impl AsFd) -> io::Result<()> {
    // SAFETY: plain integers on a socket borrowed for the call.
    cvt(unsafe { libc::shutdown(sock.as_fd().as_raw_fd(), libc::SHUT_RDWR) }).map(drop)
}

#[cfg(test)]
mod tests;
