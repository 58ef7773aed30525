//! Keys and tokens: how an entry of the reactor's [`Registry`](crate::registry)
//! is named, by handles ([`Worker`](crate::Worker), [`Server`](crate::Server))
//! and by `mio` tokens.
//!
//! Token layout: bits 0..31 the slot, bit 31 the [`Sub`] (which of the
//! entry's sources), bits 32..64 the generation. Generations are never 0,
//! so every token of ours is at least 2³², above the caller's range
//! ([`USER_TOKEN_LIMIT`](crate::USER_TOKEN_LIMIT)), and the waker's token
//! (`USER_TOKEN_LIMIT` itself) decodes to nothing.

use std::sync::atomic::{AtomicU32, Ordering};

use mio::Token;

/// Slots stay below this, clear of the [`Sub`] bit.
pub(crate) const MAX_SLOT: u32 = (1 << 31) - 1;
const SUB_BIT: usize = 1 << 31;

/// Names one entry of the registry: its slot and the generation it was
/// given when inserted. Handles ([`Worker`](crate::Worker),
/// [`Server`](crate::Server)) carry the same two numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

/// Which of an entry's sources a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    /// Its socket (a connection, a listener, a handshake) or, for a serving
    /// child, its pidfd.
    Main,
    /// A local worker's pidfd, beside its socket.
    Exit,
}

impl Key {
    /// A key for `slot` with a fresh generation.
    pub(crate) fn new(slot: u32) -> Key {
        Key {
            slot,
            gen: next_generation(),
        }
    }

    /// The key and source a token was made from; `None` for tokens that
    /// are not ours (generation 0: the caller's, the waker's).
    pub(crate) fn from_token(token: Token) -> Option<(Key, Sub)> {
        let gen = (token.0 >> 32) as u32;
        if gen == 0 {
            return None;
        }
        let key = Key {
            slot: (token.0 & MAX_SLOT as usize) as u32,
            gen,
        };
        let sub = if token.0 & SUB_BIT != 0 {
            Sub::Exit
        } else {
            Sub::Main
        };
        Some((key, sub))
    }

    /// The `mio` token of this entry's source `sub`.
    pub(crate) fn token(self, sub: Sub) -> Token {
        let bit = match sub {
            Sub::Main => 0,
            Sub::Exit => SUB_BIT,
        };
        Token(((self.gen as usize) << 32) | bit | self.slot as usize)
    }
}

/// Generations are unique across every reactor of the process, so a handle
/// from one reactor is never taken for an entry of another.
fn next_generation() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let g = NEXT.fetch_add(1, Ordering::Relaxed);
        if g != 0 {
            return g;
        }
    }
}
