//! The receive path of one connection, shared by the parent's reactor and
//! the child's channel: framing, descriptors that arrived with the bytes,
//! and the queue of received lines. A line is decoded when it is taken
//! ([`Msg::decode`]), into the type the caller asks for.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;

use crate::auth::tags::TagOpener;
use crate::auth::{session, ANY_VERSION};
use crate::envelope;
use crate::error::{AuthFailure, Error, Result};
use crate::format::Format;
use crate::framing::LineBuffer;
use crate::remote_error;
use crate::shm::SharedMemory;
use crate::sys;

/// A received line (without its `\n`, not yet decoded) and the
/// descriptors that came with it.
#[derive(Debug)]
pub(crate) struct Msg {
    line: Vec<u8>,
    batch: Option<Batch>,
}

impl Msg {
    /// The message as a `T`; regions that came with it are closed.
    pub(crate) fn decode<T: DeserializeOwned>(self, format: Format) -> Result<T> {
        self.decode_regions(format).map(|(msg, _)| msg)
    }

    /// The message as a `T` with the regions that came with it. Without
    /// descriptors the line is a plain user value, whatever its shape (an
    /// envelope-shaped user message arrives unchanged); with them it must
    /// be the region envelope, whose regions are opened. Any failure closes
    /// the descriptors.
    pub(crate) fn decode_regions<T: DeserializeOwned>(
        self,
        format: Format,
    ) -> Result<(T, Vec<SharedMemory>)> {
        match self.batch {
            None => {
                if let Some(e) = remote_error::parse(&self.line) {
                    return Err(e);
                }
                Ok((format.decode_owned(self.line)?, Vec::new()))
            }
            Some(Batch::Broken(reason)) => Err(Error::region(reason)),
            Some(Batch::Fds(fds)) => envelope::open(format, self.line, fds),
        }
    }

    /// [`Msg::decode_regions`] of what follows the line's first `skip`
    /// bytes (a frame's header, before its envelope).
    pub(crate) fn decode_regions_after<T: DeserializeOwned>(
        mut self,
        format: Format,
        skip: usize,
    ) -> Result<(T, Vec<SharedMemory>)> {
        self.line.drain(..skip.min(self.line.len()));
        self.decode_regions(format)
    }

    /// The line's bytes (without its `\n`).
    pub(crate) fn line(&self) -> &[u8] {
        &self.line
    }

    /// Whether descriptors came with the line (a region envelope).
    pub(crate) fn has_descriptors(&self) -> bool {
        self.batch.is_some()
    }

    /// The line's bytes, taken (descriptors that came with it are closed).
    pub(crate) fn into_line(self) -> Vec<u8> {
        self.line
    }

    /// A line that came with no descriptors, as a `T`, decoded where it
    /// lies (what [`Msg::decode`] does with such a line, without the copy).
    pub(crate) fn decode_line<T: DeserializeOwned>(line: &[u8], format: Format) -> Result<T> {
        if let Some(e) = remote_error::parse(line) {
            return Err(e);
        }
        Ok(format.decode(line)?)
    }
}

#[derive(Debug)]
enum Batch {
    Fds(Vec<OwnedFd>),
    /// Descriptors came with the line but cannot be used (what did arrive
    /// was closed); the line fails with this reason.
    Broken(&'static str),
}

/// Framing plus descriptor bookkeeping plus the inbox.
///
/// Which line descriptors belong to. On a Unix stream one `recvmsg` may
/// return plain bytes *and then* the bytes of the segment that carried the
/// descriptors, and it stops after that segment: the segment is always the
/// last part of the read (or the read buffer ran out inside it). The kernel
/// attaches a `sendmsg`'s descriptors to its first segment, and every sender
/// of this crate (and a Python peer using `socket.send_fds` with one line)
/// keeps the wire contract: a `sendmsg` that carries descriptors starts at
/// a line start and holds bytes of one line only, its envelope line. So the
/// descriptors belong to the line holding the *last* byte of the read that
/// brought them. [`Inbound::feed_received`] feeds the read up to the last
/// newline before that byte, then tags the batch with the line then in
/// progress, then feeds the rest. The batch is claimed (or closed) when that
/// line completes, so framing and descriptors stay in step even when a
/// batch is lost. At most one batch waits: a batch for a later line can only
/// arrive once the line holding the waiting one has completed and claimed it
/// (a second batch within one line fails that line), so a peer cannot pile
/// descriptors up in the receiver.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) lines: LineBuffer,
    lines_done: u64,
    /// The batch of the line in progress, tagged with that line's index.
    pending: Option<(u64, Batch)>,
    pub(crate) inbox: VecDeque<Result<Msg>>,
    /// Line bytes queued, each line's `\n` included (events that are no
    /// line count 0): what a slow consumer lets pile up.
    pub(crate) queued_bytes: usize,
    /// Queued lines that are no frame (a plain peer's answers): kept as
    /// items come and go, so asking costs nothing however many are queued.
    plain_lines: usize,
    /// After an authenticated handshake in mode `tag`: each line's tag is
    /// checked and stripped here (the peer's address names it in errors).
    tags: Option<Box<(TagOpener, SocketAddr)>>,
    /// A TCP client with no secret: a first line that is a server's
    /// challenge is the server asking for one, not a reply.
    challenge_from: Option<SocketAddr>,
    /// A line failed its check: the error is queued, the session is over,
    /// and nothing after it is delivered.
    broken: bool,
}

/// What a line becomes once checked (see [`Inbound::screen`]).
fn screen<'a>(
    tags: &mut Option<Box<(TagOpener, SocketAddr)>>,
    challenge_from: Option<SocketAddr>,
    first: bool,
    line: &'a [u8],
) -> Result<&'a [u8]> {
    if let Some((opener, peer)) = tags.as_deref_mut() {
        return opener
            .open(line)
            .map_err(|why| session::integrity_error(*peer, explain(line, why)));
    }
    match challenge_from {
        Some(addr) if first && line.starts_with(ANY_VERSION) => Err(Error::Auth {
            addr,
            reason: AuthFailure::SecretRequired,
        }),
        _ => Ok(line),
    }
}

/// A failed tag's words; a refusal line in its place (which a peer sends
/// untagged as it closes) is quoted, marked as unauthenticated.
fn explain(line: &[u8], why: String) -> String {
    let refusal = format!("{} refused ", crate::auth::PREFIX);
    match line.strip_prefix(refusal.as_bytes()) {
        Some(word) => format!(
            "{why}; it is the peer's refusal \"{}\" (unauthenticated)",
            String::from_utf8_lossy(&word[..word.len().min(40)])
        ),
        None => why,
    }
}

impl Inbound {
    pub(crate) fn new(max_line: usize) -> Self {
        Inbound {
            lines: LineBuffer::new(max_line),
            lines_done: 0,
            pending: None,
            inbox: VecDeque::new(),
            queued_bytes: 0,
            plain_lines: 0,
            tags: None,
            challenge_from: None,
            broken: false,
        }
    }

    /// From now on, each line must carry a valid tag (mode `tag` of an
    /// authenticated session with `peer`).
    pub(crate) fn expect_tags(&mut self, opener: TagOpener, peer: SocketAddr) {
        self.tags = Some(Box::new((opener, peer)));
    }

    /// A TCP client without a secret: a first line from `server` that is an
    /// authentication challenge is reported as [`AuthFailure::SecretRequired`].
    pub(crate) fn watch_for_challenge(&mut self, server: SocketAddr) {
        self.challenge_from = Some(server);
    }

    /// Ends the session with `e` (a record that did not decrypt): it is
    /// queued, and nothing after it is delivered.
    pub(crate) fn break_with(&mut self, e: Error) {
        if !self.broken {
            self.broken = true;
            self.push(Err(e));
        }
    }

    /// A line failed its check: the connection is to be closed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Checks a line taken in place ([`Inbound::direct_line`]): its payload,
    /// or the error that ends the session (then [`Inbound::is_broken`]).
    pub(crate) fn screen_direct<'a>(&mut self, line: &'a [u8]) -> Result<&'a [u8]> {
        let first = self.lines_done == 1;
        let got = screen(&mut self.tags, self.challenge_from, first, line);
        if got.is_err() {
            self.broken = true;
        }
        got
    }

    /// Feeds the bytes of one read and the descriptors that came with them
    /// (taken out of `got`), pairing the descriptors with the line that holds
    /// the read's last byte (see the type's docs).
    pub(crate) fn feed_received(&mut self, chunk: &[u8], got: &mut sys::Received) {
        let batch = if got.truncated {
            got.fds.clear();
            got.truncated = false;
            Batch::Broken(
                "the kernel dropped the message's descriptors (MSG_CTRUNC): the receiver is at its open-file limit, or the sender sent more than 32",
            )
        } else if got.fds.is_empty() {
            self.feed(chunk);
            return;
        } else {
            Batch::Fds(std::mem::take(&mut got.fds))
        };
        // Lines that end before the read's last byte came before the
        // descriptor segment; the line holding that byte is the envelope.
        let split = chunk
            .split_last()
            .and_then(|(_, head)| memchr::memrchr(b'\n', head))
            .map_or(0, |nl| nl + 1);
        self.feed(&chunk[..split]);
        self.attach(batch);
        self.feed(&chunk[split..]);
    }

    /// Tags a batch with the line in progress.
    fn attach(&mut self, batch: Batch) {
        if self.lines.is_discarding() {
            // The line in progress was already reported as too long (its
            // index is spent): its descriptors are closed with it, never
            // left for the next line to claim.
            return;
        }
        let index = self.lines_done;
        let batch = match self.pending.take() {
            // A second batch inside one line breaks the wire contract: the
            // line fails, and both batches are closed.
            Some((i, _)) if i == index => Batch::Broken(
                "descriptors arrived twice within one line: each envelope line must be one sendmsg with its descriptors",
            ),
            // An earlier line's batch still waiting cannot happen (its line
            // completed and claimed it); were it so, it is closed here.
            _ => batch,
        };
        self.pending = Some((index, batch));
    }

    /// Feeds bytes that came with no descriptors; each complete line is
    /// queued in the inbox with the batch it claims.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        let Inbound {
            lines,
            lines_done,
            pending,
            inbox,
            queued_bytes,
            plain_lines,
            tags,
            challenge_from,
            broken,
        } = self;
        lines.feed(chunk, |line| {
            if *broken {
                return;
            }
            let first = *lines_done == 0;
            let line = line.and_then(|l| screen(tags, *challenge_from, first, l));
            if line.is_err() && (tags.is_some() || challenge_from.is_some()) {
                // A failed check ends the session; a line too long for the
                // limit does too once lines are authenticated (its tag was
                // never seen, so the sequence is lost).
                *broken = matches!(line, Err(Error::Auth { .. })) || tags.is_some();
            }
            *queued_bytes += line.as_ref().map_or(0, |l| l.len() + 1);
            let index = *lines_done;
            *lines_done += 1;
            let batch = match pending.take() {
                Some((i, b)) if i == index => Some(b),
                // A batch of a later line waits on.
                Some((i, b)) if i > index => {
                    *pending = Some((i, b));
                    None
                }
                // An earlier line's batch nobody claimed is closed.
                _ => None,
            };
            // A line that failed framing closes its batch (it drops here).
            let item = line.map(|line| Msg {
                line: line.to_vec(),
                batch,
            });
            *plain_lines += usize::from(is_plain_line(&item));
            inbox.push_back(item);
        });
    }

    /// The length of the complete line at the start of `chunk` (up to its
    /// `\n`), when it may be taken in place instead of fed: nothing is
    /// queued or held before it (no item in the inbox, no unfinished or
    /// too-long line, no descriptors waiting), and it is within the limit.
    /// The line then counts as framed. `None`: feed the chunk instead.
    pub(crate) fn direct_line(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.broken
            || !self.inbox.is_empty()
            || self.pending.is_some()
            || self.lines.buffered() > 0
            || self.lines.is_discarding()
        {
            return None;
        }
        let len = crate::framing::find_newline(chunk)?;
        if len > self.lines.max_line() {
            return None;
        }
        self.lines_done += 1;
        Some(len)
    }

    /// End of stream: an unfinished line becomes `TruncatedLine`; waiting
    /// descriptors are closed.
    pub(crate) fn finish(&mut self) {
        if let Some(e) = self.lines.finish() {
            if !self.broken {
                self.push(Err(e));
            }
        }
        self.pending = None;
    }

    /// Queues an event that is no line (closed, connect failed, ...).
    pub(crate) fn push(&mut self, item: Result<Msg>) {
        self.plain_lines += usize::from(is_plain_line(&item));
        self.inbox.push_back(item);
    }

    /// The oldest queued item.
    pub(crate) fn pop(&mut self) -> Option<Result<Msg>> {
        let item = self.inbox.pop_front()?;
        let size = item.as_ref().map_or(0, |m| m.line.len() + 1);
        self.queued_bytes = self.queued_bytes.saturating_sub(size);
        self.plain_lines -= usize::from(is_plain_line(&item));
        Some(item)
    }

    /// Complete plain lines (not frames) queued and not yet taken.
    pub(crate) fn plain_lines(&self) -> usize {
        self.plain_lines
    }
}

/// Whether a queued item is a line that is no frame.
fn is_plain_line(item: &Result<Msg>) -> bool {
    matches!(item, Ok(m) if m.line.first() != Some(&b'#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed region and a received-like batch of one duplicate of it.
    fn region_batch() -> (SharedMemory, sys::Received) {
        let region = SharedMemory::create("inbound-test", 4096).expect("create");
        let fd = sys::dup_cloexec(&region).expect("dup");
        let got = sys::Received {
            fds: vec![fd],
            truncated: false,
        };
        (region, got)
    }

    fn envelope(id: u64, msg: &str) -> String {
        format!("{{\"miniray.regions\":[{id}],\"msg\":\"{msg}\"}}\n")
    }

    /// Each inbox item as (value or error text, number of regions).
    fn drain(inb: &mut Inbound) -> Vec<(String, usize)> {
        std::iter::from_fn(|| inb.pop())
            .map(|item| match item {
                Ok(m) => match m.decode_regions::<serde_json::Value>(Format::Json) {
                    Ok((value, regions)) => (value.to_string(), regions.len()),
                    Err(e) => (e.to_string(), 0),
                },
                Err(e) => (e.to_string(), 0),
            })
            .collect()
    }

    #[test]
    fn plain_lines_then_the_descriptor_segment_in_one_read() {
        // What one recvmsg returns when the receiver is late: plain lines,
        // then the envelope whose segment carried the descriptors.
        let (region, mut got) = region_batch();
        let mut inb = Inbound::new(1 << 20);
        let read = format!("1\n\"two\"\n{}", envelope(region.id(), "three"));
        inb.feed_received(read.as_bytes(), &mut got);
        assert_eq!(
            drain(&mut inb),
            [
                ("1".into(), 0),
                ("\"two\"".into(), 0),
                ("\"three\"".into(), 1)
            ]
        );
    }

    #[test]
    fn a_read_ending_inside_the_envelope_pairs_with_it() {
        // The read buffer ran out inside the descriptor segment: the rest of
        // the envelope comes with the next read, without descriptors.
        let (region, mut got) = region_batch();
        let mut inb = Inbound::new(1 << 20);
        let line = envelope(region.id(), "split");
        let read = format!("[1]\n{}", &line[..9]);
        inb.feed_received(read.as_bytes(), &mut got);
        inb.feed(&line.as_bytes()[9..]);
        assert_eq!(
            drain(&mut inb),
            [("[1]".into(), 0), ("\"split\"".into(), 1)]
        );
    }

    #[test]
    fn envelope_shape_without_descriptors_is_a_plain_value() {
        let mut inb = Inbound::new(1 << 20);
        let lines = b"{\"miniray.regions\":[],\"msg\":5}\n{\"miniray.regions\":[1],\"msg\":5}\n";
        inb.feed_received(lines, &mut sys::Received::default());
        assert_eq!(
            drain(&mut inb),
            [
                ("{\"miniray.regions\":[],\"msg\":5}".into(), 0),
                ("{\"miniray.regions\":[1],\"msg\":5}".into(), 0)
            ]
        );
    }

    #[test]
    fn descriptors_with_a_plain_line_fail_it_and_the_next_is_unaffected() {
        let (_region, mut got) = region_batch();
        let mut inb = Inbound::new(1 << 20);
        inb.feed_received(b"\"plain\"\n", &mut got);
        inb.feed(b"\"next\"\n");
        let out = drain(&mut inb);
        assert!(out[0].0.contains("no region envelope"), "{out:?}");
        assert_eq!(out[1], ("\"next\"".into(), 0));
    }

    #[test]
    fn a_truncated_batch_fails_its_line_only() {
        let (region, _) = region_batch();
        let mut inb = Inbound::new(1 << 20);
        let mut got = sys::Received {
            fds: Vec::new(),
            truncated: true,
        };
        let read = format!("0\n{}", envelope(region.id(), "lost"));
        inb.feed_received(read.as_bytes(), &mut got);
        inb.feed(b"1\n");
        let out = drain(&mut inb);
        assert_eq!(out[0], ("0".into(), 0));
        assert!(out[1].0.contains("MSG_CTRUNC"), "{out:?}");
        assert_eq!(out[2], ("1".into(), 0));
    }

    #[test]
    fn two_batches_within_one_line_fail_that_line() {
        let (region, mut first) = region_batch();
        let (_, mut second) = region_batch();
        let mut inb = Inbound::new(1 << 20);
        let line = envelope(region.id(), "twice");
        inb.feed_received(&line.as_bytes()[..5], &mut first);
        inb.feed_received(&line.as_bytes()[5..], &mut second);
        inb.feed(b"2\n");
        let out = drain(&mut inb);
        assert!(out[0].0.contains("twice"), "{out:?}");
        assert_eq!(out[1], ("2".into(), 0));
    }

    #[test]
    fn a_batch_arriving_while_a_too_long_line_is_dropped_goes_with_it() {
        // The too-long line was reported (its index spent) before its newline
        // came; descriptors arriving meanwhile must not pass to the next line.
        let (_region, mut got) = region_batch();
        let mut inb = Inbound::new(16);
        inb.feed(&[b'x'; 40]);
        assert!(inb.lines.is_discarding());
        inb.feed_received(b"yyyy", &mut got);
        inb.feed(b"zz\n\"next\"\n");
        let out = drain(&mut inb);
        assert!(out[0].0.contains("limit"), "{out:?}");
        assert_eq!(out[1], ("\"next\"".into(), 0));
        assert!(inb.pending.is_none());
    }

    #[test]
    fn repeated_batches_in_one_line_hold_no_descriptors() {
        // A peer breaking the contract (descriptors again and again inside
        // one line that never ends) cannot pile descriptors up: from the
        // second batch on, the line is marked broken and what came is closed.
        let mut inb = Inbound::new(1 << 20);
        inb.feed(b"[");
        for round in 0..128 {
            let (_region, mut got) = region_batch();
            inb.feed_received(b"1,", &mut got);
            match &inb.pending {
                Some((0, Batch::Fds(fds))) if round == 0 => assert_eq!(fds.len(), 1),
                Some((0, Batch::Broken(_))) if round > 0 => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        inb.feed(b"2]\n");
        let out = drain(&mut inb);
        assert!(out[0].0.contains("twice"), "{out:?}");
        assert!(inb.pending.is_none());
    }

    #[test]
    fn kernel_returns_the_descriptor_segment_last_in_a_read() {
        // The kernel behaviour the pairing rests on: one recvmsg returns plain
        // bytes and then the segment that carried descriptors, and stops
        // after that segment even though more bytes are waiting.
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let region = SharedMemory::create("kernel", 4096).expect("create");
        sys::send_nosignal(&a, b"plain\n").expect("send");
        sys::send_with_fds(&a, b"envelope\n", &[&region]).expect("sendmsg");
        sys::send_nosignal(&a, b"after\n").expect("send");
        let mut buf = [0u8; 1024];
        let mut got = sys::Received::default();
        let n = sys::recv_with_fds(&b, &mut buf, &mut got).expect("recvmsg");
        assert_eq!(&buf[..n], b"plain\nenvelope\n");
        assert_eq!(got.fds.len(), 1);
        let n = sys::recv_with_fds(&b, &mut buf, &mut sys::Received::default()).expect("recvmsg");
        assert_eq!(&buf[..n], b"after\n");
    }
}
