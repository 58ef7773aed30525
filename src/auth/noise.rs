//! Mode `noise`: encryption and integrity for links between miniray peers.
//!
//! The handshake is Noise `NNpsk0_25519_ChaChaPoly_SHA256` (the `snow`
//! crate): both sides' ephemeral keys, and a pre-shared key derived from the
//! secret and the miniray handshake's transcript (which is also the Noise
//! prologue), so only the two ends that proved the secret to each other
//! can complete it. Its two messages ride on the answer and verdict lines.
//! Afterwards the byte stream both ways is a sequence of records: a 2-byte
//! big-endian length, then that many bytes of one Noise transport message
//! (ChaCha20-Poly1305, nonces counting from 0 in each direction), holding
//! at most [`MAX_PLAIN`] bytes of the plain stream (lines, as in the plain
//! protocol). A record that does not decrypt ends the connection.

use std::sync::Arc;

use snow::{HandshakeState, StatelessTransportState};

/// The Noise protocol name.
const PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Longest Noise message.
const MAX_RECORD: usize = 65535;
/// ChaCha20-Poly1305's tag.
const TAG: usize = 16;
/// Plain bytes one record carries at most.
pub(crate) const MAX_PLAIN: usize = MAX_RECORD - TAG;

fn builder<'a>(psk: &'a [u8; 32], prologue: &'a [u8]) -> Result<snow::Builder<'a>, snow::Error> {
    let params: snow::params::NoiseParams = PARAMS.parse()?;
    snow::Builder::new(params).psk(0, psk)?.prologue(prologue)
}

/// The client's side: its first message, then the server's answer.
pub(crate) struct Initiator(HandshakeState);

/// A Noise handshake that is not finished.
impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator(..)")
    }
}

impl Initiator {
    /// Starts the handshake: the state and the first message.
    pub(crate) fn start(psk: &[u8; 32], prologue: &[u8]) -> Result<(Self, Vec<u8>), String> {
        let mut hs = builder(psk, prologue)
            .and_then(|b| b.build_initiator())
            .map_err(|e| e.to_string())?;
        let mut msg = vec![0u8; 128];
        let n = hs.write_message(&[], &mut msg).map_err(|e| e.to_string())?;
        msg.truncate(n);
        Ok((Initiator(hs), msg))
    }

    /// Reads the server's message: the keys of the session.
    pub(crate) fn finish(mut self, msg: &[u8]) -> Result<(NoiseSealer, NoiseOpener), String> {
        let mut scratch = vec![0u8; MAX_RECORD];
        self.0
            .read_message(msg, &mut scratch)
            .map_err(|e| format!("its Noise message does not verify ({e})"))?;
        let t = self
            .0
            .into_stateless_transport_mode()
            .map_err(|e| e.to_string())?;
        Ok(halves(t))
    }
}

/// The server's side, in one step: reads the client's message, writes its
/// own, and returns it with the keys of the session.
pub(crate) fn respond(
    psk: &[u8; 32],
    prologue: &[u8],
    msg: &[u8],
) -> Result<(Vec<u8>, NoiseSealer, NoiseOpener), String> {
    let mut hs = builder(psk, prologue)
        .and_then(|b| b.build_responder())
        .map_err(|e| e.to_string())?;
    let mut scratch = vec![0u8; MAX_RECORD];
    hs.read_message(msg, &mut scratch)
        .map_err(|e| format!("its Noise message does not verify ({e})"))?;
    let mut out = vec![0u8; 128];
    let n = hs.write_message(&[], &mut out).map_err(|e| e.to_string())?;
    out.truncate(n);
    let t = hs
        .into_stateless_transport_mode()
        .map_err(|e| e.to_string())?;
    let (s, o) = halves(t);
    Ok((out, s, o))
}

fn halves(t: StatelessTransportState) -> (NoiseSealer, NoiseOpener) {
    let t = Arc::new(t);
    (
        NoiseSealer {
            t: Arc::clone(&t),
            nonce: 0,
        },
        NoiseOpener {
            t,
            nonce: 0,
            partial: Vec::new(),
            plain: Vec::new(),
        },
    )
}

/// Encrypts the bytes one side sends into records.
pub(crate) struct NoiseSealer {
    t: Arc<StatelessTransportState>,
    nonce: u64,
}

/// Decrypts the records one side receives.
pub(crate) struct NoiseOpener {
    t: Arc<StatelessTransportState>,
    nonce: u64,
    /// The start of a record whose rest has not arrived (at most one record).
    partial: Vec<u8>,
    /// One record's plain bytes.
    plain: Vec<u8>,
}

impl std::fmt::Debug for NoiseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoiseSealer {{ nonce: {} }}", self.nonce)
    }
}

impl std::fmt::Debug for NoiseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoiseOpener {{ nonce: {} }}", self.nonce)
    }
}

impl NoiseSealer {
    /// Replaces the plain bytes `out[mark..]` with their records.
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>, mark: usize, scratch: &mut Vec<u8>) {
        scratch.clear();
        scratch.extend_from_slice(&out[mark..]);
        out.truncate(mark);
        let records = scratch.len().div_ceil(MAX_PLAIN);
        out.reserve(scratch.len() + records * (2 + TAG));
        for chunk in scratch.chunks(MAX_PLAIN) {
            let at = out.len();
            let len = chunk.len() + TAG;
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.resize(at + 2 + len, 0);
            // A chunk within MAX_PLAIN into a buffer of its exact size
            // cannot fail; were it to, the record stays zeros and the
            // receiver refuses it, so nothing unsealed ever leaves.
            let _ = self.t.write_message(self.nonce, chunk, &mut out[at + 2..]);
            self.nonce = self.nonce.wrapping_add(1);
        }
    }
}

impl NoiseOpener {
    /// Decrypts the records in `bytes` (a record may span calls), handing
    /// each one's plain bytes to `sink`. Memory: one record's start and one
    /// record's plain bytes (64 KiB each). Stops at the first record that
    /// does not decrypt, with why.
    pub(crate) fn open(
        &mut self,
        mut bytes: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), String> {
        if self.plain.len() < MAX_RECORD {
            self.plain.resize(MAX_RECORD, 0);
        }
        if !self.partial.is_empty() {
            // Complete the record begun by an earlier call: its length first.
            if self.partial.len() < 2 {
                let take = (2 - self.partial.len()).min(bytes.len());
                self.partial.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.partial.len() < 2 {
                    return Ok(());
                }
            }
            let whole = 2 + usize::from(u16::from_be_bytes([self.partial[0], self.partial[1]]));
            let take = (whole - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < whole {
                return Ok(());
            }
            let record = std::mem::take(&mut self.partial);
            self.decrypt(&record[2..], &mut sink)?;
            // Keep the allocation for the next cut record.
            self.partial = record;
            self.partial.clear();
        }
        self.open_whole(bytes, &mut sink)
    }

    /// Records that start at the beginning of `bytes`; a cut one is kept.
    fn open_whole(&mut self, mut bytes: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<(), String> {
        while bytes.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            if bytes.len() < 2 + len {
                break;
            }
            self.decrypt(&bytes[2..2 + len], sink)?;
            bytes = &bytes[2 + len..];
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// At the end of the stream: a refusal line the peer wrote in place of
    /// a record as it closed (it cannot be authenticated), quoted.
    pub(crate) fn refusal_at_end(&self) -> Option<String> {
        let prefix = format!("{} refused ", super::PREFIX);
        let word = self.partial.strip_prefix(prefix.as_bytes())?;
        let word = word.split(|&b| b == b'\n').next().unwrap_or_default();
        Some(format!(
            "the peer closed the session with the refusal \"{}\" (unauthenticated)",
            String::from_utf8_lossy(&word[..word.len().min(40)])
        ))
    }

    fn decrypt(&mut self, record: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<(), String> {
        let n = self.nonce;
        match self.t.read_message(n, record, &mut self.plain) {
            Ok(len) => {
                self.nonce = self.nonce.wrapping_add(1);
                sink(&self.plain[..len]);
                Ok(())
            }
            Err(_) => Err(format!(
                "encrypted record {n} received after the handshake does not decrypt (altered, forged, replayed or out of order)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> ((NoiseSealer, NoiseOpener), (NoiseSealer, NoiseOpener)) {
        let psk = [3u8; 32];
        let (init, m1) = Initiator::start(&psk, b"transcript").expect("start");
        let (m2, ss, so) = respond(&psk, b"transcript", &m1).expect("respond");
        let (cs, co) = init.finish(&m2).expect("finish");
        ((cs, co), (ss, so))
    }

    #[test]
    fn records_survive_any_cut_and_a_flipped_byte_is_refused() {
        let ((mut cs, _), (_, mut so)) = pair();
        let mut plain = Vec::new();
        for i in 0..3000u32 {
            plain.extend_from_slice(format!("{{\"n\": {i}}}\n").as_bytes());
        }
        plain.extend(std::iter::repeat_n(b'x', 200_000));
        plain.push(b'\n');
        let mut out = b"ignored".to_vec();
        let mut scratch = Vec::new();
        out.extend_from_slice(&plain);
        cs.seal(&mut out, 7, &mut scratch);
        let wire = out.split_off(7);
        let mut got = Vec::new();
        // Cut in odd places: 1 byte, then growing pieces.
        let mut at = 0;
        let mut step = 1;
        while at < wire.len() {
            let end = (at + step).min(wire.len());
            so.open(&wire[at..end], |p| got.extend_from_slice(p))
                .expect("opens");
            at = end;
            step = step * 3 + 1;
        }
        assert_eq!(got, plain);

        let ((mut cs, _), (_, mut so)) = pair();
        let mut out = b"{\"x\": 1}\n".to_vec();
        cs.seal(&mut out, 0, &mut scratch);
        out[5] ^= 1;
        let mut delivered = Vec::new();
        assert!(so.open(&out, |p| delivered.extend_from_slice(p)).is_err());
        assert!(delivered.is_empty());
    }

    #[test]
    fn another_psk_cannot_finish_the_handshake() {
        let (_, m1) = Initiator::start(&[1u8; 32], b"t").expect("start");
        assert!(respond(&[2u8; 32], b"t", &m1).is_err());
        let (_, m1) = Initiator::start(&[1u8; 32], b"t").expect("start");
        assert!(respond(&[1u8; 32], b"other transcript", &m1).is_err());
    }
}
