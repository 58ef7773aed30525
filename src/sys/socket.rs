//! Socket I/O: `send` with `MSG_NOSIGNAL`, `sendmsg`/`recvmsg` with
//! `SCM_RIGHTS`, the socket's domain, `poll` over a few sockets (the exec
//! relay), the peeking reads of the authentication handshake, and TCP
//! keepalive.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_r, len};

/// `send(2)` with `MSG_NOSIGNAL`: a peer that closed gives `EPIPE`, never SIGPIPE.
pub(crate) fn send_nosignal(sock: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    let fd = sock.as_fd().as_raw_fd();
    // SAFETY: buf is a valid readable slice for its length; the socket is
    // borrowed, so open for the call.
    let n = cvt(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })?;
    Ok(len(n))
}

/// Most descriptors one message may carry.
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 32;

/// Control-buffer words: exactly `CMSG_SPACE(MAX_FDS_PER_MESSAGE * 4)`, in
/// `u64`s so the buffer is aligned for `cmsghdr`. No slack: a peer that sends
/// more than [`MAX_FDS_PER_MESSAGE`] descriptors gets `MSG_CTRUNC`.
const CMSG_WORDS: usize =
    (MAX_FDS_PER_MESSAGE * 4 + std::mem::size_of::<libc::cmsghdr>()).div_ceil(8);

/// `sendmsg(2)` of `buf` with `fds` as `SCM_RIGHTS`, `MSG_NOSIGNAL`. The
/// descriptors are only borrowed: the kernel gives the peer its own copies.
pub(crate) fn send_with_fds<F: AsFd>(sock: impl AsFd, buf: &[u8], fds: &[F]) -> io::Result<usize> {
    if fds.is_empty() || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "1 to 32 descriptors per message",
        ));
    }
    let sock = sock.as_fd().as_raw_fd();
    let mut raw = [0 as RawFd; MAX_FDS_PER_MESSAGE];
    for (slot, fd) in raw.iter_mut().zip(fds) {
        *slot = fd.as_fd().as_raw_fd();
    }
    let raw = &raw[..fds.len()];
    let mut control = [0u64; CMSG_WORDS];
    let payload = std::mem::size_of_val(raw) as libc::c_uint;
    // SAFETY: msghdr/iovec point at live buffers of the lengths given; the
    // control buffer is aligned and at least CMSG_SPACE(payload) long
    // (checked), so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for fds.
    unsafe {
        let space = libc::CMSG_SPACE(payload) as usize;
        if space > std::mem::size_of_val(&control) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "control buffer too small",
            ));
        }
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
        std::ptr::copy_nonoverlapping(
            raw.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            raw.len(),
        );
        cvt(libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)).map(len)
    }
}

/// What `recv_with_fds` found besides bytes.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Descriptors that arrived (close-on-exec).
    pub(crate) fds: Vec<OwnedFd>,
    /// The kernel set `MSG_CTRUNC`: some descriptors were dropped.
    pub(crate) truncated: bool,
}

/// `recvmsg(2)` with `MSG_CMSG_CLOEXEC` and room for
/// [`MAX_FDS_PER_MESSAGE`] descriptors. Every descriptor that arrived is
/// returned as an `OwnedFd`, so none can leak whatever the caller does next.
pub(crate) fn recv_with_fds(
    sock: impl AsFd,
    buf: &mut [u8],
    got: &mut Received,
) -> io::Result<usize> {
    let sock = sock.as_fd().as_raw_fd();
    let mut control = [0u64; CMSG_WORDS];
    // SAFETY: msghdr/iovec point at live buffers of the lengths given; the
    // kernel writes at most msg_controllen bytes of control data; the cmsg
    // walk uses the libc macros over that buffer and reads only SCM_RIGHTS
    // payloads, whose length the kernel set.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = cvt(libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC))?;
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            got.truncated = true;
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const u8;
                let header = data.offset_from(cmsg as *const u8) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    got.fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(len(n))
    }
}

/// True if `fd` is a Unix-domain socket (`SO_DOMAIN` is `AF_UNIX`).
pub(crate) fn is_unix_socket(sock: impl AsFd) -> bool {
    let fd = sock.as_fd().as_raw_fd();
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `domain`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    cvt(r).is_ok() && domain == libc::AF_UNIX
}

/// `poll(2)` over a few descriptors, each with the events asked for
/// (`POLLIN`, `POLLOUT`); returns what each reported (`POLLHUP` and
/// `POLLERR` included), in order. `None` waits without limit; a timeout
/// past `i32::MAX` ms waits that long. `EINTR` reports nothing.
pub(crate) fn poll_events(
    fds: &[(BorrowedFd<'_>, libc::c_short)],
    timeout: Option<std::time::Duration>,
) -> io::Result<Vec<libc::c_short>> {
    let mut set: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, events)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *events,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
    // SAFETY: `set` is a live array of `set.len()` pollfds of borrowed,
    // open descriptors; poll writes only their `revents`.
    match cvt(unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, ms) }) {
        Ok(_) => Ok(set.iter().map(|p| p.revents).collect()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![0; set.len()]),
        Err(e) => Err(e),
    }
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)`: looks without consuming.
pub(crate) fn peek(sock: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = sock.as_fd().as_raw_fd();
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = cvt(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) })?;
    Ok(len(n))
}

/// `recv(MSG_DONTWAIT)` of bytes already known (by a peek) to be queued.
pub(crate) fn recv_exact_nonblocking(sock: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = sock.as_fd().as_raw_fd();
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: writes at most rest.len() bytes into rest.
        let n = cvt_r(|| unsafe {
            libc::recv(fd, rest.as_mut_ptr().cast(), rest.len(), libc::MSG_DONTWAIT)
        })?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += len(n);
    }
    Ok(done)
}

/// One `setsockopt(2)` of a C `int` option.
fn set_int_opt(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int for the call and the length given is
    // its size; the socket is borrowed, so open for the call.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Turns on TCP keepalive, tuned: the first probe after `idle_secs` of
/// silence, then one every `interval_secs`, `count` unanswered probes end
/// the connection (`ETIMEDOUT`). A live peer's kernel answers the probes
/// however busy its process is. `TCP_USER_TIMEOUT` is set to
/// `user_timeout_ms` (0: none, the kernel's default): it also aborts a
/// connection whose data stays unacknowledged that long, which includes a
/// busy peer whose receive window is full, so it must exceed any task's
/// deadline.
pub(crate) fn set_keepalive(
    sock: impl AsFd,
    idle_secs: u32,
    interval_secs: u32,
    count: u32,
    user_timeout_ms: u32,
) -> io::Result<()> {
    let sock = sock.as_fd();
    let int = |v: u32| libc::c_int::try_from(v.max(1)).unwrap_or(libc::c_int::MAX);
    set_int_opt(sock, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int_opt(sock, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, int(idle_secs))?;
    set_int_opt(
        sock,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        int(interval_secs),
    )?;
    set_int_opt(sock, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, int(count))?;
    let user = libc::c_int::try_from(user_timeout_ms).unwrap_or(libc::c_int::MAX);
    set_int_opt(sock, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, user)
}

/// Reads an `int` socket option (for tests of [`set_keepalive`]).
#[cfg(test)]
pub(crate) fn get_int_opt(
    sock: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, a live
    // c_int, and updates `len`.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}
