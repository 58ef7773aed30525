//! miniray inside a plain `poll(2)` loop over stdin and the reactor's fd.
//!
//! Each line of stdin goes to one of four workers, which answer with the
//! line upper-cased; replies are printed as they come. Ends after the last
//! reply once stdin is at EOF.
//!
//! `printf 'a\nb\nc\n' | cargo run --example embed_poll`

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use miniray::framing::LineBuffer;
use miniray::Reactor;

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: embed_poll < LINES
  (no flags) each line of stdin is upper-cased by one of four workers
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = args::Args::new("embed_poll", USAGE);
    if let Some(flag) = args.next_flag() {
        args.unknown(&flag);
    }
    let mut reactor = Reactor::new()?;
    let workers = (0..4)
        .map(|_| reactor.spawn(|line: String| line.to_uppercase()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<VecDeque<usize>> = vec![VecDeque::new(); workers.len()];
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut stdin_open = true;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut framer = LineBuffer::new(1 << 20);
    let (mut sent, mut answered) = (0usize, 0usize);
    let out = std::io::stdout();
    let mut out = out.lock();

    while stdin_open || answered < sent {
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: if stdin_open { libc::POLLIN } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: reactor.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds for the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 10_000) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if n == 0 {
            return Err("no progress for 10 s".into());
        }
        if fds[0].revents != 0 {
            // A read larger than stdin's 8 KiB buffer bypasses it, so no line
            // hides in a buffer that poll cannot see; miniray's framing splits them.
            let n = input.read(&mut chunk)?;
            let mut lines = Vec::new();
            if n == 0 {
                stdin_open = false;
                if let Some(e) = framer.finish() {
                    eprintln!("embed_poll: last line dropped: {e}");
                }
            }
            framer.feed(&chunk[..n], |line| match line {
                Ok(l) => lines.push(String::from_utf8_lossy(l).into_owned()),
                Err(e) => eprintln!("embed_poll: {e}"),
            });
            for line in lines {
                let i = sent % workers.len();
                reactor.send(workers[i], &line)?;
                order[i].push_back(sent);
                sent += 1;
            }
            reactor.flush();
        }
        if fds[1].revents != 0 {
            // The non-blocking step: process what is ready, return at once.
            for w in reactor.wait_any(Some(Duration::ZERO))? {
                let i = workers
                    .iter()
                    .position(|&x| x == w)
                    .ok_or("unknown worker")?;
                while let Some(reply) = reactor.try_recv::<String>(w)? {
                    let n = order[i].pop_front().ok_or("reply with nothing sent")?;
                    writeln!(out, "{n}: {reply}")?;
                    answered += 1;
                }
            }
        }
    }
    Ok(())
}
