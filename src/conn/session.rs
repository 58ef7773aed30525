//! A connection's authenticated session, seen from the reactor's side: the
//! client's handshake while it runs, then every line sealed as it is
//! queued and every read checked (records decrypted before framing; tags
//! are checked by the inbox).

use std::net::SocketAddr;

use super::{Conn, State};
use crate::auth::handshake::ClientHandshake;
use crate::auth::session::{self, Opener, Session};
use crate::error::Result;
use crate::format::Format;
use crate::sys;

impl Conn {
    /// Keeps a TCP client's handshake until it is `Authenticating`.
    pub(crate) fn set_handshake(&mut self, hs: ClientHandshake) {
        self.handshake = Some(Box::new(hs));
    }

    /// The client's handshake, while it runs.
    pub(crate) fn handshake_mut(&mut self) -> Option<&mut ClientHandshake> {
        self.handshake.as_deref_mut()
    }

    /// A TCP client without a secret connected to `server`: a challenge as
    /// its first line is the server asking for a secret.
    pub(crate) fn watch_for_challenge(&mut self, server: SocketAddr) {
        self.inbound.watch_for_challenge(server);
    }

    /// The handshake succeeded: from now on every line is sealed and
    /// checked with `session`, and the connection is open.
    pub(crate) fn open_session(&mut self, session: Box<Session>) {
        self.handshake = None;
        let Session {
            peer,
            sealer,
            opener,
        } = *session;
        self.sealer = Some(Box::new(sealer));
        match opener {
            Opener::Tags(t) => self.inbound.expect_tags(t, peer),
            Opener::Noise(n) => self.records = Some(Box::new((n, peer))),
        }
        self.state = State::Open;
    }

    /// Encodes one line into the output, sealed when the connection is
    /// authenticated; on failure the output is as it was.
    pub(super) fn encode_sealed<E>(&mut self, scratch: &mut Vec<u8>, encode: E) -> Result<()>
    where
        E: FnOnce(Format, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    {
        let before = self.out.len();
        let mark = self.sealer.as_ref().map(|s| s.begin(&mut self.out));
        if let Err(e) = encode(self.format, &mut self.out, scratch) {
            self.out.truncate(before);
            return Err(e);
        }
        if let (Some(s), Some(mark)) = (self.sealer.as_mut(), mark) {
            s.seal(&mut self.out, mark, scratch);
        }
        Ok(())
    }

    /// Feeds one read to the inbox: decrypted first in mode `noise` (a
    /// record that does not decrypt ends the session).
    pub(super) fn feed_read(&mut self, chunk: &[u8], got: &mut sys::Received) {
        match self.records.as_deref_mut() {
            None => self.inbound.feed_received(chunk, got),
            Some((opener, peer)) => {
                let inbound = &mut self.inbound;
                if let Err(why) = opener.open(chunk, |plain| inbound.feed(plain)) {
                    inbound.break_with(session::integrity_error(*peer, why));
                }
            }
        }
    }

    /// At EOF in mode `noise`: a refusal the peer wrote in place of a
    /// record is quoted as the session's end.
    pub(super) fn end_of_records(&mut self) {
        if let Some((opener, peer)) = self.records.as_deref() {
            if let Some(why) = opener.refusal_at_end() {
                self.inbound
                    .break_with(session::integrity_error(*peer, why));
            }
        }
    }
}
