//! A worker's `Channel` takes complete lines straight from its read buffer
//! and hands everything else (lines split across reads, too-long lines,
//! lines that came with descriptors) to the framing: whatever the mix, the
//! messages and per-message errors come out in stream order, as framing
//! alone gives them. Real socketpairs; each read is made to end where the
//! test says by writing the next piece only after the lines before it were
//! taken. An idle limit bounds every `recv`: a line lost or held back fails
//! with `Timeout` instead of hanging.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use common::DEADLINE;
use miniray::{Channel, Error, Format, SharedMemory, Value};

fn reader(max_line: usize) -> (Channel, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let mut chan = Channel::new(a, Format::Json, max_line);
    chan.set_idle_timeout(Some(DEADLINE));
    (chan, b)
}

fn next(chan: &mut Channel) -> String {
    match chan.recv::<Value>() {
        Ok(Some(v)) => v.to_string(),
        Ok(None) => "EOF".into(),
        Err(Error::LineTooLong { .. }) => "too long".into(),
        Err(Error::TruncatedLine { len }) => format!("truncated {len}"),
        Err(Error::Remote { kind, .. }) => format!("remote {kind}"),
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[test]
fn lines_split_too_long_and_crlf_come_out_in_stream_order() {
    let (mut chan, mut peer) = reader(16);
    // (piece written, what the receiver then reads)
    let script: &[(&[u8], &[&str])] = &[
        (b"1\n2\r\n[3,", &["1", "2"]),
        (b"4]\n\"a\"\n", &["[3, 4]", "'a'"]),
        // A too-long line inside one read, then a line after it.
        (b"\"far too long a line\"\n5\n", &["too long", "5"]),
        // A too-long line that does not end in this read: reported at once.
        (b"\"too long and split", &["too long"]),
        (b" in two\"\n6\n7", &["6"]),
    ];
    for (piece, want) in script {
        peer.write_all(piece).expect("write");
        for w in *want {
            assert_eq!(
                next(&mut chan),
                *w,
                "after writing {:?}",
                String::from_utf8_lossy(piece)
            );
        }
    }
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(next(&mut chan), "truncated 1");
    assert_eq!(next(&mut chan), "EOF");
}

#[test]
fn error_replies_and_region_envelopes_between_plain_lines() {
    let (mut chan, peer) = reader(1 << 20);
    let mut peer_chan = Channel::new(peer.try_clone().expect("dup"), Format::Json, 1 << 20);
    let mut peer = peer;
    let region = SharedMemory::create("channel-framing", 4096).expect("memfd");
    peer.write_all(b"1\n2\n").expect("write");
    peer_chan
        .send_error("boom", "it broke")
        .expect("error line");
    peer_chan
        .send_regions(&Value::from(3), &[&region])
        .expect("envelope");
    peer.write_all(b"4\n").expect("write");
    assert_eq!(next(&mut chan), "1");
    assert_eq!(next(&mut chan), "2");
    assert_eq!(next(&mut chan), "remote boom");
    let (v, regions) = chan
        .recv_regions::<Value>()
        .expect("recv")
        .expect("a message");
    assert_eq!((v.to_string(), regions.len()), ("3".to_string(), 1));
    assert_eq!(regions[0].id(), region.id());
    assert_eq!(next(&mut chan), "4");
}

/// With batched replies, a reply waits while a complete request is
/// buffered (taken in place or queued) and is written once none is.
#[test]
fn batched_replies_wait_only_while_a_request_is_buffered() {
    let (mut chan, mut peer) = reader(1 << 20);
    chan.set_batch_replies(true);
    peer.set_nonblocking(true).expect("nonblocking");
    peer.write_all(b"1\n2\n").expect("write");
    let mut buf = [0u8; 64];
    let mut pending = || match peer.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) if e.kind() == ErrorKind::WouldBlock => String::new(),
        Err(e) => panic!("read: {e}"),
    };
    let a: Value = chan.recv().expect("recv").expect("a message");
    chan.send(&a).expect("send");
    assert_eq!(pending(), "", "reply 1 waits: request 2 is buffered");
    let b: Value = chan.recv().expect("recv").expect("a message");
    chan.send(&b).expect("send");
    assert_eq!(
        pending(),
        "1\n2\n",
        "nothing buffered: both replies written"
    );
}
