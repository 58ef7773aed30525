//! The receive path of one connection, shared by the parent's reactor and
//! the child's channel: framing, descriptors that arrived with the bytes,
//! decoding, and the queue of decoded messages.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use serde_json::Value;

use crate::error::Result;
use crate::format::Format;
use crate::framing::LineBuffer;
use crate::shm::{self, SharedMemory};
use crate::sys;

/// Descriptor batches kept waiting for their line; past this the oldest is
/// closed (a peer that sends descriptors with no envelope cannot pile them up).
const MAX_PENDING_BATCHES: usize = 64;

/// A decoded message and the regions that came with it.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) value: Value,
    pub(crate) regions: Vec<SharedMemory>,
}

#[derive(Debug)]
enum Batch {
    Fds(Vec<OwnedFd>),
    /// The kernel dropped descriptors (`MSG_CTRUNC`); what did arrive was closed.
    Truncated,
}

/// Framing plus descriptor bookkeeping plus the inbox.
///
/// Descriptors belong to the line in progress when they arrive: a sender
/// attaches them to the first byte of the line's `sendmsg`, and a Unix
/// stream never merges data carrying descriptors with data before it in one
/// read. Each batch is tagged with the index of that line, and claimed (or
/// closed) when the line completes, so framing and descriptors stay in step
/// even when a batch is lost.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) lines: LineBuffer,
    lines_done: u64,
    batches: VecDeque<(u64, Batch)>,
    pub(crate) inbox: VecDeque<Result<Msg>>,
    /// Line bytes of each queued item (0 for events that are no line).
    sizes: VecDeque<usize>,
    /// Sum of `sizes`: what a slow consumer lets pile up.
    pub(crate) queued_bytes: usize,
}

impl Inbound {
    pub(crate) fn new(max_line: usize) -> Self {
        Inbound {
            lines: LineBuffer::new(max_line),
            lines_done: 0,
            batches: VecDeque::new(),
            inbox: VecDeque::new(),
            sizes: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// Records what arrived beside the next bytes to be fed.
    pub(crate) fn fds_arrived(&mut self, got: &mut sys::Received) {
        let batch = if got.truncated {
            got.fds.clear();
            got.truncated = false;
            Batch::Truncated
        } else if got.fds.is_empty() {
            return;
        } else {
            Batch::Fds(std::mem::take(&mut got.fds))
        };
        if self.batches.len() >= MAX_PENDING_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back((self.lines_done, batch));
    }

    /// Feeds bytes; each complete line is decoded into the inbox.
    pub(crate) fn feed(&mut self, chunk: &[u8], format: Format, scratch: &mut Vec<u8>) {
        let Inbound {
            lines,
            lines_done,
            batches,
            inbox,
            sizes,
            queued_bytes,
        } = self;
        lines.feed(chunk, |line| {
            let size = line.as_ref().map_or(0, |l| l.len() + 1);
            sizes.push_back(size);
            *queued_bytes += size;
            let index = *lines_done;
            *lines_done += 1;
            // Batches of earlier lines nobody claimed: close them.
            while batches.front().is_some_and(|(i, _)| *i < index) {
                batches.pop_front();
            }
            let batch = match batches.front() {
                Some((i, _)) if *i == index => batches.pop_front().map(|(_, b)| b),
                _ => None,
            };
            inbox.push_back(decode(line, format, scratch, batch));
        });
    }

    /// End of stream: an unfinished line becomes `TruncatedLine`; waiting
    /// descriptors are closed.
    pub(crate) fn finish(&mut self) {
        if let Some(e) = self.lines.finish() {
            self.push(Err(e));
        }
        self.batches.clear();
    }

    /// Queues an event that is no line (closed, connect failed, ...).
    pub(crate) fn push(&mut self, item: Result<Msg>) {
        self.inbox.push_back(item);
        self.sizes.push_back(0);
    }

    /// The oldest queued item.
    pub(crate) fn pop(&mut self) -> Option<Result<Msg>> {
        let item = self.inbox.pop_front()?;
        let size = self.sizes.pop_front().unwrap_or(0);
        self.queued_bytes = self.queued_bytes.saturating_sub(size);
        Some(item)
    }
}

fn decode(
    line: Result<&[u8]>,
    format: Format,
    scratch: &mut Vec<u8>,
    batch: Option<Batch>,
) -> Result<Msg> {
    let value = format.decode_line(line?, scratch)?;
    match shm::open_envelope(value) {
        // A plain message; descriptors sent with it (if any) are closed.
        Err(value) => Ok(Msg {
            value,
            regions: Vec::new(),
        }),
        Ok((ids, value)) => match batch {
            None if ids.is_empty() => Ok(Msg {
                value,
                regions: Vec::new(),
            }),
            None => Err(shm::region_error("the message names regions but no descriptors came with it")),
            Some(Batch::Truncated) => Err(shm::region_error(
                "the kernel dropped the message's descriptors (MSG_CTRUNC): the receiver is at its open-file limit",
            )),
            Some(Batch::Fds(fds)) => shm::open_regions(&ids, fds).map(|regions| Msg { value, regions }),
        },
    }
}
