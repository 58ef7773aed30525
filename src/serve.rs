//! The worker's side of requests: one loop, over a [`Channel`], for plain
//! lines and frames alike. Closure workers ([`Reactor::spawn`]), a pool's
//! workers and the children of [`Reactor::listen`] all run it.
//!
//! Each line is answered in kind (see `PROTOCOL.md`): a plain request with
//! a plain reply (or an error reply, the `{"miniray.error": ...}` dict), a
//! framed request `#q<id>` with `#r<id>` (or `#e<id>`), a chunk `#c<id>`
//! with one `#k<id>` line answering every item, a hello with an accept.
//! Each item runs under its own `catch_unwind`, so a panic fails only its
//! own item; after a panic the worker answers what it was given, then exits
//! with [`EXIT_PANIC`](crate::process::EXIT_PANIC) (its state may be
//! broken): that exit, not any reply, is what ends it for its caller.
//!
//! [`Reactor::spawn`]: crate::Reactor::spawn
//! [`Reactor::listen`]: crate::Reactor::listen

use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::{Channel, Item};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::frame::{self, Kind};
use crate::list_writer::{append_line, ListWriter};
use crate::shm::SharedMemory;

/// A work function as the loop runs it.
pub(crate) trait Work<A> {
    /// What it answers.
    type Rep: Serialize;
    /// One request: its reply, or the work function's own error in words.
    fn run(&mut self, req: A) -> std::result::Result<Self::Rep, String>;

    /// One request that came with shared memory regions: by default they
    /// are closed and the request runs as any other.
    fn run_with(
        &mut self,
        req: A,
        regions: Vec<SharedMemory>,
    ) -> std::result::Result<Self::Rep, String> {
        drop(regions);
        self.run(req)
    }
}

/// A work function that takes the regions its requests carry:
/// `Fn(A, Vec<SharedMemory>) -> R` (empty for a request without).
pub(crate) struct WithRegions<F>(pub(crate) F);

impl<F, A, R> Work<A> for WithRegions<F>
where
    F: FnMut(A, Vec<SharedMemory>) -> R,
    R: Serialize,
{
    type Rep = R;
    fn run(&mut self, req: A) -> std::result::Result<R, String> {
        Ok((self.0)(req, Vec::new()))
    }
    fn run_with(&mut self, req: A, regions: Vec<SharedMemory>) -> std::result::Result<R, String> {
        Ok((self.0)(req, regions))
    }
}

/// A work function that cannot fail: `Fn(A) -> R`.
pub(crate) struct Infallible<F>(pub(crate) F);

impl<F, A, R> Work<A> for Infallible<F>
where
    F: FnMut(A) -> R,
    R: Serialize,
{
    type Rep = R;
    fn run(&mut self, req: A) -> std::result::Result<R, String> {
        Ok((self.0)(req))
    }
}

/// A work function that can fail: `Fn(A) -> Result<R, E>`; an `Err` fails
/// its task with the error's text (kind `error`), and the worker goes on.
pub(crate) struct Fallible<F>(pub(crate) F);

impl<F, A, R, E> Work<A> for Fallible<F>
where
    F: FnMut(A) -> std::result::Result<R, E>,
    R: Serialize,
    E: Display,
{
    type Rep = R;
    fn run(&mut self, req: A) -> std::result::Result<R, String> {
        (self.0)(req).map_err(|e| e.to_string())
    }
}

/// Why one item has no reply: `(kind, message)`, kinds as `PROTOCOL.md`
/// names them.
type Failure = (&'static str, String);

/// What one line asks for.
enum Request<A> {
    /// A plain line, decoded (or why not), with the regions that came
    /// with it.
    Plain(std::result::Result<A, Failure>, Vec<SharedMemory>),
    /// `#q<id>`, with its regions.
    One(u64, std::result::Result<A, Failure>, Vec<SharedMemory>),
    /// `#c<id>`.
    Chunk(u64, std::result::Result<Vec<A>, Failure>),
    /// `#h0`.
    Hello,
    /// Nothing to answer (the peer hung up mid-line).
    Nothing,
}

/// Serves requests until the peer closes the connection (`Ok`), or the
/// connection fails (`Err`: not a request's fault).
pub(crate) fn serve<A, W>(chan: &mut Channel, work: &mut W) -> Result<()>
where
    A: DeserializeOwned,
    W: Work<A>,
{
    let format = chan.format();
    let mut bufs = Bufs::default();
    loop {
        let request = match chan.next_item() {
            Ok(None) => return Ok(()),
            Ok(Some(item)) => read(item, format),
            Err(e) if e.is_message_error() => failed_line(&e),
            Err(e) => return Err(e),
        };
        let panicked = match request {
            Request::Nothing => false,
            Request::Hello => {
                chan.send_with(|_, out, _| {
                    out.extend_from_slice(frame::ACCEPT);
                    out.push(b'\n');
                    Ok(())
                })?;
                false
            }
            Request::Plain(Ok(req), regions) => match run(work, req, regions) {
                Ran::Ok(rep) => {
                    match chan.send(&rep) {
                        // A reply the format cannot carry fails its request
                        // alone; nothing of it was queued.
                        Err(e @ Error::Encode { .. }) => {
                            chan.send_error("encode", &e.to_string())?
                        }
                        other => other?,
                    }
                    false
                }
                Ran::Failed((kind, message)) => {
                    chan.send_error(kind, &message)?;
                    kind == PANIC
                }
            },
            Request::Plain(Err((kind, message)), _) => {
                chan.send_error(kind, &message)?;
                false
            }
            Request::One(id, Ok(req), regions) => match run(work, req, regions) {
                Ran::Ok(rep) => {
                    let max_line = chan.max_line();
                    let sent = chan.send_with(|format, out, scratch| {
                        let start = out.len();
                        frame::write_header(Kind::Reply, id, out);
                        format.encode_line(&rep, out, scratch)?;
                        let len = out.len() - start - 1;
                        if len > max_line {
                            // Its caller would drop it unread: say why instead.
                            return Err(Error::LineTooLong {
                                limit: max_line,
                                start: Vec::new(),
                            });
                        }
                        Ok(())
                    });
                    match sent {
                        Err(e @ Error::Encode { .. }) => {
                            send_failure(chan, id, ("encode", e.to_string()))?
                        }
                        Err(Error::LineTooLong { limit, .. }) => {
                            let message = format!("the reply is over the {limit}-byte line limit");
                            send_failure(chan, id, ("line too long", message))?
                        }
                        other => other?,
                    }
                    false
                }
                Ran::Failed(failure) => {
                    let panicked = failure.0 == PANIC;
                    send_failure(chan, id, failure)?;
                    panicked
                }
            },
            Request::One(id, Err(failure), _) | Request::Chunk(id, Err(failure)) => {
                send_failure(chan, id, failure)?;
                false
            }
            Request::Chunk(id, Ok(items)) => serve_chunk(chan, work, id, items, &mut bufs)?,
        };
        if panicked {
            // Its state may be broken: answer what was asked, then go. The
            // caller learns it from the exit, not from the reply.
            chan.flush()?;
            crate::sys::exit_now(crate::process::EXIT_PANIC);
        }
    }
}

/// The kind of a caught panic.
const PANIC: &str = "panic";

/// The outcome of one item.
enum Ran<R> {
    Ok(R),
    Failed(Failure),
}

fn run<A, W: Work<A>>(work: &mut W, req: A, regions: Vec<SharedMemory>) -> Ran<W::Rep> {
    let outcome = if regions.is_empty() {
        panic::catch_unwind(AssertUnwindSafe(|| work.run(req)))
    } else {
        panic::catch_unwind(AssertUnwindSafe(|| work.run_with(req, regions)))
    };
    match outcome {
        Ok(Ok(rep)) => Ran::Ok(rep),
        Ok(Err(message)) => Ran::Failed(("error", message)),
        Err(payload) => {
            // Its drop could panic again, outside any catch.
            std::mem::forget(payload);
            // With its location, as the worker's panic hook kept it.
            Ran::Failed((PANIC, crate::fork::last_panic_text()))
        }
    }
}

/// What a line asks for, its payload decoded into the request type.
fn read<A: DeserializeOwned>(item: Item<'_>, format: Format) -> Request<A> {
    let owned;
    let line = match item {
        Item::Line(line) => line,
        // Descriptors came with it: a region envelope, after a frame's
        // header or alone.
        Item::Queued(m) if m.has_descriptors() => return with_regions(m, format),
        Item::Queued(m) => {
            owned = m.into_line();
            &owned[..]
        }
    };
    match frame::parse(line) {
        Ok(None) => Request::Plain(
            format.decode(line).map_err(|e| ("decode", e.to_string())),
            Vec::new(),
        ),
        Ok(Some((h, payload))) => match h.kind {
            Kind::Request => Request::One(
                h.id,
                format
                    .decode(payload)
                    .map_err(|e| ("decode", e.to_string())),
                Vec::new(),
            ),
            Kind::Chunk => Request::Chunk(
                h.id,
                format
                    .decode(payload)
                    .map_err(|e| ("decode", e.to_string())),
            ),
            Kind::Hello => Request::Hello,
            // An answer sent to a worker: nobody asked it anything.
            other => Request::Plain(
                Err((
                    "frame",
                    format!("a worker takes requests, not {other:?} frames"),
                )),
                Vec::new(),
            ),
        },
        Err(e) => Request::Plain(Err(("frame", e.to_string())), Vec::new()),
    }
}

/// A line that came with descriptors: the region envelope of a framed
/// request (`#q<id>`, its regions opened) or of a plain one.
fn with_regions<A: DeserializeOwned>(m: crate::inbound::Msg, format: Format) -> Request<A> {
    let header = match frame::parse(m.line()) {
        Ok(Some((h, payload))) => Some((h, m.line().len() - payload.len())),
        _ => None,
    };
    match header {
        Some((h, skip)) if h.kind == Kind::Request => match m.decode_regions_after(format, skip) {
            Ok((req, regions)) => Request::One(h.id, Ok(req), regions),
            Err(e) => Request::One(h.id, Err(decode_failure(e)), Vec::new()),
        },
        Some((h, _)) => {
            let what = format!("a {:?} frame cannot carry regions", h.kind);
            match h.kind {
                Kind::Chunk => Request::Chunk(h.id, Err(("region", what))),
                _ => Request::Plain(Err(("frame", what)), Vec::new()),
            }
        }
        None => match m.decode_regions(format) {
            Ok((req, regions)) => Request::Plain(Ok(req), regions),
            Err(e) => Request::Plain(Err(decode_failure(e)), Vec::new()),
        },
    }
}

fn decode_failure(e: Error) -> Failure {
    let kind = match &e {
        Error::Region { .. } => "region",
        _ => "decode",
    };
    (kind, e.to_string())
}

/// A line that failed before it could be read: answered in kind when its
/// first bytes name a framed request.
fn failed_line<A>(e: &Error) -> Request<A> {
    let kind = match e {
        // The peer hung up mid-line: nobody to answer.
        Error::TruncatedLine { .. } => return Request::Nothing,
        Error::Decode(_) => "decode",
        Error::LineTooLong { .. } => "line too long",
        Error::Region { .. } => "region",
        _ => "error",
    };
    let failure = (kind, e.to_string());
    if let Error::LineTooLong { start, .. } = e {
        if let Ok(Some((h, _))) = frame::parse(start) {
            match h.kind {
                Kind::Request => return Request::One(h.id, Err(failure), Vec::new()),
                Kind::Chunk => return Request::Chunk(h.id, Err(failure)),
                _ => {}
            }
        }
    }
    Request::Plain(Err(failure), Vec::new())
}

/// `#e<id> [kind, message]`.
fn send_failure(chan: &mut Channel, id: u64, (kind, message): Failure) -> Result<()> {
    chan.send_with(|format, out, scratch| {
        frame::write_header(Kind::Error, id, out);
        format.encode_line(&(kind, message), out, scratch)
    })
}

/// Buffers a chunk's answer is written in, kept across chunks.
#[derive(Default)]
struct Bufs {
    replies: Vec<u8>,
    outer: Vec<u8>,
}

/// Runs every item of chunk `id` and answers with one `#k<id>` line
/// (replies of the items that succeeded, failures by index, the time the
/// items took). A reply the format cannot carry fails its item alone; an
/// answer longer than the line limit fails the chunk as a whole (`#e`), and
/// the caller sends its items again one by one. True if an item panicked.
fn serve_chunk<A, W: Work<A>>(
    chan: &mut Channel,
    work: &mut W,
    id: u64,
    items: Vec<A>,
    bufs: &mut Bufs,
) -> Result<bool> {
    let format = chan.format();
    let mut replies = ListWriter::new(format, std::mem::take(&mut bufs.replies));
    let mut failures: Vec<(usize, &'static str, String)> = Vec::new();
    let started = Instant::now();
    for (i, item) in items.into_iter().enumerate() {
        match run(work, item, Vec::new()) {
            Ran::Ok(rep) => {
                if let Err(e) = replies.push(&rep) {
                    failures.push((i, "encode", e.to_string()));
                }
            }
            Ran::Failed((kind, message)) => failures.push((i, kind, message)),
        }
    }
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let panicked = failures.iter().any(|f| f.1 == PANIC);
    let replies = replies.finish();
    let mut outer = ListWriter::new(format, std::mem::take(&mut bufs.outer));
    outer.push_raw(&replies);
    // Strings and ints always encode.
    outer.push(&failures)?;
    outer.push(&nanos)?;
    let text_len = outer.text_len();
    let raw = outer.finish();
    if frame::MAX_HEADER + text_len > chan.max_line() {
        let message = format!(
            "the chunk's answer ({} bytes) is over the {}-byte line limit",
            frame::MAX_HEADER + text_len,
            chan.max_line()
        );
        send_failure(chan, id, ("line too long", message))?;
    } else {
        chan.send_with(|format, out, _| {
            frame::write_header(Kind::ChunkReply, id, out);
            append_line(format, &raw, out);
            Ok(())
        })?;
    }
    bufs.replies = replies;
    bufs.outer = raw;
    Ok(panicked)
}
