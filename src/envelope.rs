//! The region envelope: how a message travels with shared memory regions.
//!
//! A message with regions is one ordinary line in the connection's format
//! whose value is `{"miniray.regions": [id, ...], "msg": <the message>}`;
//! the first `sendmsg` of that line carries the regions' descriptors, in id
//! order. This file holds the key, what may be sent ([`check_regions`], the
//! one precondition check of both send paths), the line's encoding in both
//! formats, and on receipt the opening of an envelope and the pairing of
//! its ids with the descriptors that came with it. Which line a batch of
//! descriptors came with is `inbound.rs`'s business; mapping a region is
//! `shm.rs`'s.

use std::os::fd::OwnedFd;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::Format;
use crate::shm::SharedMemory;
use crate::sys;

/// Most regions one message may carry: the descriptors one `sendmsg` may
/// hold (the receiver's control buffer has room for exactly that many).
pub(crate) const MAX_REGIONS: usize = sys::MAX_FDS_PER_MESSAGE;

/// The preconditions of sending `regions` (at least one) with a message,
/// checked before anything is queued or sent, in this order by both
/// `Reactor::send_regions` and `Channel::send_regions`: a TCP connection
/// refuses regions whatever their number (descriptors do not cross
/// machines), then more than [`MAX_REGIONS`] are refused.
pub(crate) fn check_regions(regions: &[&SharedMemory], tcp: bool) -> Result<()> {
    if tcp {
        return Err(Error::region(
            "regions cannot be sent over TCP: descriptors do not cross machines",
        ));
    }
    if regions.len() > MAX_REGIONS {
        return Err(Error::region("at most 32 regions per message"));
    }
    Ok(())
}

/// The envelope as it is written: the message in place (not copied).
#[derive(Serialize)]
struct Outgoing<'a, T: ?Sized> {
    #[serde(rename = "miniray.regions")]
    regions: Vec<u64>,
    msg: &'a T,
}

/// The envelope as it is read: exactly these two keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<T> {
    #[serde(rename = "miniray.regions")]
    regions: Vec<u64>,
    msg: T,
}

/// Appends the envelope `{"miniray.regions": [ids], "msg": msg}` of
/// `regions` (ids in the order their descriptors are sent) as one line in
/// `format`. The line must go out in its own `sendmsg` with the
/// descriptors (see `inbound.rs`); it holds exactly one newline, its last
/// byte, which the reactor's flush looks for to end that `sendmsg`.
pub(crate) fn encode_envelope_line<T: Serialize + ?Sized>(
    format: Format,
    regions: &[&SharedMemory],
    msg: &T,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    let ids: Vec<u64> = regions.iter().map(|r| r.id()).collect();
    encode_envelope_ids(format, &ids, msg, out, scratch)
}

/// [`encode_envelope_line`] for regions named by their ids alone (a pool's
/// task keeps its regions' descriptors, not their mappings).
pub(crate) fn encode_envelope_ids<T: Serialize + ?Sized>(
    format: Format,
    ids: &[u64],
    msg: &T,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    let envelope = Outgoing {
        regions: ids.to_vec(),
        msg,
    };
    format.encode_line(&envelope, out, scratch)
}

/// Opens a line that descriptors came with: it must be an envelope, whose
/// message is decoded as a `T` and whose regions are opened with
/// [`open_regions`]. Any failure closes every descriptor. A line that is
/// an envelope but whose message does not fit `T` fails with that decode
/// error; any other line, with [`Error::Region`].
pub(crate) fn open<T: DeserializeOwned>(
    format: Format,
    line: Vec<u8>,
    fds: Vec<OwnedFd>,
) -> Result<(T, Vec<SharedMemory>)> {
    match format.decode::<Incoming<T>>(&line) {
        Ok(envelope) => open_regions(&envelope.regions, fds).map(|regions| (envelope.msg, regions)),
        Err(e) if format.decode_owned::<Incoming<IgnoredAny>>(line).is_ok() => Err(e.into()),
        Err(_) => Err(Error::region(
            "descriptors came with a line that is no region envelope",
        )),
    }
}

/// Opens the regions that came with an envelope, pairing ids with
/// descriptors in order: read-write, or read-only if the sender sealed the
/// region against writes (`SharedMemory::open_received`: one check of its
/// seals and size each). Any failure closes every descriptor.
fn open_regions(ids: &[u64], fds: Vec<OwnedFd>) -> Result<Vec<SharedMemory>> {
    if ids.len() != fds.len() {
        return Err(Error::region(
            "message names a different number of regions than descriptors arrived",
        ));
    }
    let mut out = Vec::with_capacity(ids.len());
    for (fd, &id) in fds.into_iter().zip(ids) {
        // One check of seals and size; on error the remaining descriptors
        // drop (close) with the iterator.
        out.push(SharedMemory::open_received(fd, id)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn regions(n: usize) -> Vec<SharedMemory> {
        (0..n)
            .map(|_| SharedMemory::create("envelope-test", 4096).expect("create"))
            .collect()
    }

    #[test]
    fn envelope_line_equals_the_envelope_value_encoded() {
        let owned = regions(2);
        let refs: Vec<&SharedMemory> = owned.iter().collect();
        let msg = json!({"tensor": 42, "shape": [2, 3], "name": "é"});
        let value = json!({"miniray.regions": [owned[0].id(), owned[1].id()], "msg": msg});
        for format in [Format::Json, Format::Marshal] {
            let mut direct = Vec::new();
            encode_envelope_line(format, &refs, &msg, &mut direct, &mut Vec::new())
                .expect("envelope");
            assert_eq!(direct, format.encode(&value).expect("value"), "{format}");
            let _ = &msg;
        }
    }

    #[test]
    fn an_encoded_envelope_opens_with_its_descriptors() {
        let owned = regions(3);
        let refs: Vec<&SharedMemory> = owned.iter().collect();
        for format in [Format::Json, Format::Marshal] {
            let mut line = Vec::new();
            encode_envelope_line(format, &refs, &json!([1, "x"]), &mut line, &mut Vec::new())
                .expect("envelope");
            line.pop();
            let fds = owned
                .iter()
                .map(|r| sys::dup_cloexec(r).expect("dup"))
                .collect();
            let (msg, got): (serde_json::Value, _) = open(format, line, fds).expect("opens");
            assert_eq!(msg, json!([1, "x"]));
            let ids: Vec<u64> = got.iter().map(SharedMemory::id).collect();
            let sent: Vec<u64> = owned.iter().map(SharedMemory::id).collect();
            assert_eq!(ids, sent, "{format}");
        }
    }

    #[test]
    fn a_line_that_is_no_envelope_or_miscounts_is_refused() {
        let owned = regions(1);
        let fd = || vec![sys::dup_cloexec(&owned[0]).expect("dup")];
        for v in [
            json!("plain"),
            json!({"miniray.regions": [1], "msg": 1, "extra": 2}),
            json!({"miniray.regions": [-1], "msg": 1}),
            json!({"miniray.regions": 1, "msg": 1}),
        ] {
            let line = serde_json::to_vec(&v).expect("json");
            let e = open::<serde_json::Value>(Format::Json, line, fd()).expect_err("no envelope");
            assert!(e.to_string().contains("no region envelope"), "{v}: {e}");
        }
        let line = br#"{"miniray.regions": [1, 2], "msg": 1}"#.to_vec();
        let e = open::<serde_json::Value>(Format::Json, line, fd()).expect_err("count");
        assert!(e.to_string().contains("different number"), "{e}");
        // An envelope whose message does not fit the type asked for is a
        // decode error, not a missing envelope.
        let line = br#"{"miniray.regions": [1], "msg": "text"}"#.to_vec();
        let e = open::<u32>(Format::Json, line, fd()).expect_err("mismatch");
        assert!(matches!(e, Error::Decode(_)), "{e}");
    }

    #[test]
    fn tcp_is_refused_before_the_count() {
        let owned = regions(MAX_REGIONS + 1);
        let all: Vec<&SharedMemory> = owned.iter().collect();
        let tcp = |n: usize, tcp: bool| match check_regions(&all[..n], tcp) {
            Err(Error::Region { reason }) => reason,
            Ok(()) => "ok",
            Err(e) => panic!("{e:?}"),
        };
        assert!(tcp(MAX_REGIONS + 1, true).contains("TCP"));
        assert!(tcp(1, true).contains("TCP"));
        assert!(tcp(MAX_REGIONS + 1, false).contains("at most 32"));
        assert_eq!(tcp(MAX_REGIONS, false), "ok");
    }
}
