//! What an authenticated connection carries after its handshake: the
//! sending half ([`Sealer`]) and the receiving half (tags are checked per
//! line by the inbox, records decrypted per read by the connection).

use std::net::SocketAddr;

use super::noise::{NoiseOpener, NoiseSealer};
use super::tags::{TagOpener, TagSealer};
use crate::error::{AuthFailure, Error};

/// The protection a session's lines get after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An integrity tag per line (`PROTOCOL.md` section 4); any peer with
    /// HMAC-SHA256 speaks it (Python's standard library does).
    Tag,
    /// Noise transport records: encrypted and integrity-protected.
    Noise,
}

impl Mode {
    /// The word on the wire.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Mode::Tag => "tag",
            Mode::Noise => "noise",
        }
    }

    pub(crate) fn from_word(w: &[u8]) -> Option<Self> {
        match w {
            b"tag" => Some(Mode::Tag),
            b"noise" => Some(Mode::Noise),
            _ => None,
        }
    }
}

/// Both halves of a session, as the handshake makes them.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) peer: SocketAddr,
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
}

/// The sending half.
#[derive(Debug)]
pub(crate) enum Sealer {
    Tags(TagSealer),
    Noise(NoiseSealer),
}

/// The receiving half.
#[derive(Debug)]
pub(crate) enum Opener {
    /// Checked per line, by [`Inbound`](crate::inbound::Inbound).
    Tags(TagOpener),
    /// Decrypted per read, before framing.
    Noise(NoiseOpener),
}

impl Sealer {
    /// Before a line is appended to `out`: room for what the sealer puts
    /// in front of it. Returns where the line starts (hand it to
    /// [`Sealer::seal`]).
    pub(crate) fn begin(&self, out: &mut Vec<u8>) -> usize {
        let mark = out.len();
        if let Sealer::Tags(_) = self {
            TagSealer::reserve(out);
        }
        mark
    }

    /// Seals what was appended since `mark` (from [`Sealer::begin`]).
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>, mark: usize, scratch: &mut Vec<u8>) {
        match self {
            Sealer::Tags(t) => t.seal(out, mark),
            Sealer::Noise(n) => n.seal(out, mark, scratch),
        }
    }

    /// Undoes [`Sealer::begin`] when the line could not be encoded.
    pub(crate) fn abandon(out: &mut Vec<u8>, mark: usize) {
        out.truncate(mark);
    }
}

/// The error a receiving half reports: the peer and why.
pub(crate) fn integrity_error(peer: SocketAddr, why: String) -> Error {
    Error::Auth {
        addr: peer,
        reason: AuthFailure::Integrity(why),
    }
}
