//! The parent's read path leaves nothing behind: a readiness event that
//! reported only new bytes is read until a read returns less than the
//! buffer, which drains the socket except after descriptors, at an urgent
//! mark (`MSG_OOB`) and at a hang-up. Each test queues such bytes in full
//! before the parent reads once, so a read that stopped early would leave
//! them with no event to announce them, and the next `recv` would time out.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use miniray::{ConnectOptions, Error, Reactor, SharedMemory, Worker, WorkerOptions};

/// Long enough for anything here; a byte left unread shows as a timeout.
const WAIT: Duration = Duration::from_secs(10);

/// `send(2)` of one byte with `MSG_OOB`: an urgent mark in the stream.
fn send_urgent(fd: RawFd) {
    // SAFETY: a one-byte buffer that outlives the call.
    let n = unsafe { libc::send(fd, b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(n, 1, "send MSG_OOB: {}", std::io::Error::last_os_error());
}

/// A signal line from a worker to the test, apart from the worker's socket:
/// the worker writes one byte once all it sends is in its socket.
fn signal_pair() -> (UnixStream, UnixStream) {
    let (test_end, worker_end) = UnixStream::pair().expect("socketpair");
    test_end.set_read_timeout(Some(WAIT)).expect("timeout");
    (test_end, worker_end)
}

/// Waits for the worker's signal byte.
fn await_signal(test_end: &mut UnixStream) {
    let mut byte = [0u8];
    test_end
        .read_exact(&mut byte)
        .expect("the worker signals within the deadline");
}

/// Receives `n` integers from `w`, each within the deadline.
fn recv_ints(r: &mut Reactor, w: Worker, n: usize) -> Vec<i64> {
    (0..n)
        .map(|i| match r.recv::<i64>(w, Some(WAIT)) {
            Ok(v) => v,
            Err(e) => panic!("message {i}: {e}"),
        })
        .collect()
}

#[test]
fn lines_after_an_urgent_mark_on_a_local_worker_arrive() {
    let (mut test_end, worker_end) = signal_pair();
    let signal_fd = worker_end.as_raw_fd();
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new().keep_fd(signal_fd);
    let w = r
        .spawn_channel(&opts, move |chan| {
            chan.send(&1)?;
            send_urgent(chan.as_raw_fd());
            chan.send(&2)?;
            chan.send(&3)?;
            // SAFETY: one byte to a descriptor this child kept open.
            unsafe { libc::write(signal_fd, b"k".as_ptr().cast(), 1) };
            // Until the parent closes: nothing more will come.
            while chan.recv::<i64>()?.is_some() {}
            Ok(())
        })
        .expect("spawn");
    drop(worker_end);
    await_signal(&mut test_end);
    // One read stops at the mark; the event said so (EPOLLPRI).
    assert_eq!(recv_ints(&mut r, w, 3), [1, 2, 3]);
    r.close(w).expect("close");
    match r.recv::<i64>(w, Some(WAIT)) {
        Err(Error::Closed { status }) => {
            assert!(status.is_some_and(|s| s.success()), "{status:?}")
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn lines_after_an_urgent_mark_over_tcp_arrive() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .connect(addr, &ConnectOptions::new(), Some(WAIT))
        .expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let mut peer = &server;
    std::io::Write::write_all(&mut peer, b"1\n").expect("write");
    send_urgent(server.as_raw_fd());
    std::io::Write::write_all(&mut peer, b"2\n3\n").expect("write");
    // Loopback delivers before `send` returns; give it a moment regardless.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(recv_ints(&mut r, w, 3), [1, 2, 3]);
    drop(server);
    match r.recv::<i64>(w, Some(WAIT)) {
        Err(Error::Closed { .. }) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn a_line_after_descriptors_in_one_read_arrives() {
    let (mut test_end, worker_end) = signal_pair();
    let signal_fd = worker_end.as_raw_fd();
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new().keep_fd(signal_fd);
    let w = r
        .spawn_channel(&opts, move |chan| {
            let region = SharedMemory::create("read-path", 4096)?;
            chan.send(&1)?;
            chan.send_regions(&2, &[&region])?;
            chan.send(&3)?;
            // SAFETY: one byte to a descriptor this child kept open.
            unsafe { libc::write(signal_fd, b"k".as_ptr().cast(), 1) };
            while chan.recv::<i64>()?.is_some() {}
            Ok(())
        })
        .expect("spawn");
    drop(worker_end);
    await_signal(&mut test_end);
    // The first read ends after the envelope's segment, with its descriptor.
    assert_eq!(r.recv::<i64>(w, Some(WAIT)).expect("1"), 1);
    let (two, regions) = r.recv_regions::<i64>(w, Some(WAIT)).expect("2");
    assert_eq!((two, regions.len()), (2, 1));
    assert_eq!(r.recv::<i64>(w, Some(WAIT)).expect("3"), 3);
}

#[test]
fn a_line_and_the_hang_up_behind_it_both_arrive() {
    let (mut test_end, worker_end) = signal_pair();
    let signal_fd = worker_end.as_raw_fd();
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new().keep_fd(signal_fd);
    let w = r
        .spawn_channel(&opts, move |chan| {
            chan.send(&1)?;
            // Shut down both ways before signalling: the hang-up is queued
            // behind the line before the parent reads.
            // SAFETY: shutdown of this child's own socket.
            unsafe { libc::shutdown(chan.as_raw_fd(), libc::SHUT_RDWR) };
            // SAFETY: one byte to a descriptor this child kept open.
            unsafe { libc::write(signal_fd, b"k".as_ptr().cast(), 1) };
            Ok(())
        })
        .expect("spawn");
    drop(worker_end);
    await_signal(&mut test_end);
    assert_eq!(r.recv::<i64>(w, Some(WAIT)).expect("the line"), 1);
    match r.recv::<i64>(w, Some(WAIT)) {
        Err(Error::Closed { status }) => {
            assert!(status.is_some_and(|s| s.success()), "{status:?}")
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}
