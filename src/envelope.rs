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

use serde_json::Value;

use crate::error::{Error, Result};
use crate::format::Format;
use crate::marshal;
use crate::shm::SharedMemory;
use crate::sys;

/// The key of the envelope that carries region ids beside a message.
pub(crate) const ENVELOPE_KEY: &str = "miniray.regions";

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

/// Appends the envelope `{"miniray.regions": [ids], "msg": msg}` of
/// `regions` (ids in the order their descriptors are sent) as one line in
/// `format`, writing `msg` in place (the message is not copied). The line
/// must go out in its own `sendmsg` with the descriptors (see
/// `inbound.rs`); it holds exactly one newline, its last byte, which the
/// reactor's flush looks for to end that `sendmsg`.
pub(crate) fn encode_envelope_line(
    format: Format,
    regions: &[&SharedMemory],
    msg: &Value,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    match format {
        Format::Json => {
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(ENVELOPE_KEY.as_bytes());
            out.extend_from_slice(b"\":[");
            for (i, r) in regions.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(r.id().to_string().as_bytes());
            }
            out.extend_from_slice(b"],\"msg\":");
            format.json_into(msg, out)?;
            out.push(b'}');
        }
        Format::Marshal => {
            // A marshal dict is `{`, key/value pairs, `0`; only the message
            // is large, and it is encoded in place.
            scratch.clear();
            let ids = Value::from(regions.iter().map(|r| r.id()).collect::<Vec<u64>>());
            scratch.push(b'{');
            [&Value::from(ENVELOPE_KEY), &ids, &Value::from("msg"), msg]
                .into_iter()
                .try_for_each(|v| marshal::encode(v, scratch))
                .map_err(|reason| Error::Encode {
                    format,
                    reason: reason.into(),
                })?;
            scratch.push(b'0');
            format.base64_into(scratch, out)?;
        }
    }
    out.push(b'\n');
    Ok(())
}

/// Opens a line that descriptors came with: it must be an envelope, whose
/// regions are opened with [`open_regions`] and returned with the message.
/// Any failure closes every descriptor.
pub(crate) fn open(value: Value, fds: Vec<OwnedFd>) -> Result<(Value, Vec<SharedMemory>)> {
    match open_envelope(value) {
        Ok((ids, msg)) => open_regions(&ids, fds).map(|regions| (msg, regions)),
        Err(_) => Err(Error::region(
            "descriptors came with a line that is no region envelope",
        )),
    }
}

/// If `v` is an envelope `{"miniray.regions": [ids], "msg": m}`, its ids and
/// message; otherwise `v` back. Asked only of a line that descriptors came
/// with: without them a line is a user value, whatever its shape.
fn open_envelope(v: Value) -> std::result::Result<(Vec<u64>, Value), Value> {
    let Value::Object(mut map) = v else {
        return Err(v);
    };
    let well_formed = map.len() == 2
        && map.contains_key("msg")
        && map
            .get(ENVELOPE_KEY)
            .and_then(|ids| ids.as_array())
            .is_some_and(|ids| ids.iter().all(|i| i.as_u64().is_some()));
    if !well_formed {
        return Err(Value::Object(map));
    }
    let ids = map
        .get(ENVELOPE_KEY)
        .and_then(|ids| ids.as_array())
        .map(|ids| ids.iter().filter_map(|i| i.as_u64()).collect())
        .unwrap_or_default();
    let msg = map.shift_remove("msg").unwrap_or(Value::Null);
    Ok((ids, msg))
}

/// Opens the regions that came with an envelope, pairing ids with
/// descriptors in order: read-write, or read-only if the sender sealed the
/// region against writes. Any failure closes every descriptor.
fn open_regions(ids: &[u64], fds: Vec<OwnedFd>) -> Result<Vec<SharedMemory>> {
    if ids.len() != fds.len() {
        return Err(Error::region(
            "message names a different number of regions than descriptors arrived",
        ));
    }
    let mut out = Vec::with_capacity(ids.len());
    for (fd, &id) in fds.into_iter().zip(ids) {
        // Read-write, unless the sender sealed the region against writes.
        let write_sealed = sys::get_seals(&fd)
            .is_ok_and(|s| s & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0);
        // On error the remaining descriptors drop (close) with the iterator.
        out.push(SharedMemory::from_fd(fd, id, !write_sealed)?);
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
            let value = format
                .decode(&line[..line.len() - 1])
                .expect("decodes as a plain value");
            let fds = owned
                .iter()
                .map(|r| sys::dup_cloexec(r).expect("dup"))
                .collect();
            let (msg, got) = open(value, fds).expect("opens");
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
            let e = open(v.clone(), fd()).expect_err("no envelope");
            assert!(e.to_string().contains("no region envelope"), "{v}: {e}");
        }
        let e = open(json!({"miniray.regions": [1, 2], "msg": 1}), fd()).expect_err("count");
        assert!(e.to_string().contains("different number"), "{e}");
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
