//! An exec server's serving child on an authenticated connection: the
//! program cannot check tags or decrypt, so it gets a socketpair of plain
//! lines as its stdin and stdout, and this child relays between that and
//! the sealed TCP connection ([`Channel`]), line by line both ways.
//!
//! Bounds: the lines waiting for the program are held up to 1 MiB plus
//! one line (past it, the client is not read until the program takes
//! them); the program's output is framed with the server's line limit.
//! When the client closes, the program's stdin is closed once everything
//! was written; when the program closes its stdout (it exited), the child
//! exits with the program's status. An idle limit closes the connection
//! when the client sent no line for that long while the program had
//! answered every line (one reply per request, as the plain protocol).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::fork::{self, Work};
use crate::frame::{self, Kind};
use crate::framing::LineBuffer;
use crate::options::{ChildSettings, LineSettings};
use crate::process::{EXIT_ERROR, EXIT_IDLE};
use crate::sys;
use crate::worker::Exec;

/// Client lines held for the program before the client is no longer read.
const BACKLOG: usize = 1 << 20;

/// Runs `program` on a socketpair and relays; never returns on success (it
/// exits with the program's status).
pub(super) fn serve_exec(
    ch: &mut Channel,
    program: &Exec,
    line: &LineSettings,
    child: &ChildSettings,
    idle: Option<Duration>,
) -> Result<()> {
    let (mine, theirs) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
    let pid = fork::spawn_child::<fn(&mut Channel) -> Result<()>>(
        line,
        child,
        OwnedFd::from(theirs),
        Work::Exec(program),
    )?;
    mine.set_nonblocking(true)
        .map_err(|e| Error::io("fcntl", e))?;
    let mut relay = Relay {
        prog: mine,
        to_prog: Vec::new(),
        written: 0,
        from_prog: LineBuffer::new(line.max_line),
        client_open: true,
        prog_open: true,
        sent: 0,
        answered: 0,
        too_long: VecDeque::new(),
    };
    let outcome = relay.run(ch, idle);
    // The client is gone or the program is done: closing our end tells the
    // program (if still running) that its input ended.
    drop(relay);
    let status = sys::wait(pid).map_err(|e| Error::io("waitpid", e))?;
    if let Err(e) = outcome {
        if e.is_timeout() {
            let _ = ch.flush();
            sys::exit_now(EXIT_IDLE);
        }
        return Err(e);
    }
    let _ = ch.flush();
    let code = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => EXIT_ERROR,
    };
    sys::exit_now(code)
}

struct Relay {
    prog: UnixStream,
    /// Client lines not yet written to the program, from `written` on.
    to_prog: Vec<u8>,
    written: usize,
    from_prog: LineBuffer,
    client_open: bool,
    prog_open: bool,
    /// Lines given to the program, and lines it sent back (for the idle rule).
    sent: u64,
    answered: u64,
    /// Plain client lines too long to pass on, each with its place among
    /// the answers (the number of lines before it): its error reply goes
    /// back there, so the replies stay in order.
    too_long: VecDeque<(u64, String)>,
}

impl Relay {
    fn backlog(&self) -> usize {
        self.to_prog.len() - self.written
    }

    fn run(&mut self, ch: &mut Channel, idle: Option<Duration>) -> Result<()> {
        let mut quiet_since = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while self.prog_open {
            let read_client = self.client_open && self.backlog() < BACKLOG;
            let mut fds = vec![(self.prog.as_fd(), libc::POLLIN)];
            if self.backlog() > 0 {
                fds[0].1 |= libc::POLLOUT;
            }
            let sock = ch.socket();
            if read_client {
                fds.push((sock, libc::POLLIN));
            }
            // Idle only while the program owes nothing and waits for input.
            let waiting = self.sent == self.answered && self.backlog() == 0 && self.client_open;
            let limit = idle.filter(|_| waiting);
            let timeout = limit.map(|l| l.saturating_sub(quiet_since.elapsed()));
            let got = sys::poll_events(&fds, timeout).map_err(|e| Error::io("poll", e))?;
            let prog_ev = got[0];
            let client_ev = got.get(1).copied().unwrap_or(0);
            if prog_ev == 0 && client_ev == 0 {
                if limit.is_some_and(|l| quiet_since.elapsed() >= l) {
                    let _ = sys::shutdown(ch.socket());
                    return Err(Error::Timeout);
                }
                continue;
            }
            quiet_since = Instant::now();
            if client_ev != 0 {
                let to_prog = &mut self.to_prog;
                let sent = &mut self.sent;
                let too_long = &mut self.too_long;
                let mut framed_too_long = Vec::new();
                let open = ch.read_lines(&mut |line| {
                    match line {
                        Ok(payload) => {
                            to_prog.extend_from_slice(payload);
                            to_prog.push(b'\n');
                        }
                        // A framed request is answered by its id at once.
                        Err(e @ Error::LineTooLong { .. }) if framed_id(&e).is_some() => {
                            framed_too_long.push(e);
                            return Ok(());
                        }
                        Err(e) => too_long.push_back((*sent, e.to_string())),
                    }
                    *sent += 1;
                    Ok(())
                })?;
                for e in framed_too_long {
                    if let Some(id) = framed_id(&e) {
                        let failure = ("line too long", e.to_string());
                        ch.send_with(|format, out, scratch| {
                            frame::write_header(Kind::Error, id, out);
                            format.encode_line(&failure, out, scratch)
                        })?;
                    }
                }
                self.answer_too_long(ch)?;
                if !open {
                    self.client_open = false;
                }
            }
            if prog_ev & (libc::POLLOUT | libc::POLLERR) != 0 || self.backlog() > 0 {
                self.write_prog()?;
            }
            if !self.client_open && self.backlog() == 0 {
                // Everything the client sent was handed over: end its input.
                let _ = self.prog.shutdown(std::net::Shutdown::Write);
            }
            if prog_ev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                self.read_prog(ch, &mut buf)?;
            }
        }
        Ok(())
    }

    /// Sends the error replies of over-long plain lines whose turn came.
    fn answer_too_long(&mut self, ch: &mut Channel) -> Result<()> {
        Self::too_long_due(&mut self.too_long, &mut self.answered, ch)
    }

    /// The error replies due now: each once every line before its own was
    /// answered.
    fn too_long_due(
        too_long: &mut VecDeque<(u64, String)>,
        answered: &mut u64,
        ch: &mut Channel,
    ) -> Result<()> {
        while too_long.front().is_some_and(|(at, _)| *at == *answered) {
            if let Some((_, message)) = too_long.pop_front() {
                ch.send_error("line too long", &message)?;
                *answered += 1;
            }
        }
        Ok(())
    }

    /// Writes what the program can take now.
    fn write_prog(&mut self) -> Result<()> {
        while self.written < self.to_prog.len() {
            match sys::send_nosignal(&self.prog, &self.to_prog[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The program stopped reading (exited): what it said
                // still goes back; its input is dropped.
                Err(_) => {
                    self.written = self.to_prog.len();
                }
            }
        }
        if self.written == self.to_prog.len() {
            self.to_prog.clear();
            self.written = 0;
            if self.to_prog.capacity() > BACKLOG {
                self.to_prog = Vec::new();
            }
        }
        Ok(())
    }

    /// Reads the program's output and sends each complete line.
    fn read_prog(&mut self, ch: &mut Channel, buf: &mut [u8]) -> Result<()> {
        loop {
            match self.prog.read(buf) {
                Ok(0) => {
                    self.prog_open = false;
                    return Ok(());
                }
                Ok(n) => {
                    let mut failed = None;
                    let answered = &mut self.answered;
                    let too_long = &mut self.too_long;
                    self.from_prog.feed(&buf[..n], |line| {
                        if failed.is_some() {
                            return;
                        }
                        failed = Self::too_long_due(too_long, answered, ch).err();
                        if failed.is_some() {
                            return;
                        }
                        *answered += 1;
                        failed = match line {
                            Ok(line) => ch.send_line(line).err(),
                            // A line past the limit cannot go: the client
                            // gets an error reply in its place.
                            Err(e) => ch.send_error("line too long", &e.to_string()).err(),
                        };
                    });
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.prog_open = false;
                    return Ok(());
                }
            }
        }
    }
}

/// The id of the framed request (`#q`, `#c`) an over-long line started.
fn framed_id(e: &Error) -> Option<u64> {
    let Error::LineTooLong { start, .. } = e else {
        return None;
    };
    match frame::parse(start) {
        Ok(Some((h, _))) if matches!(h.kind, Kind::Request | Kind::Chunk) => Some(h.id),
        _ => None,
    }
}
