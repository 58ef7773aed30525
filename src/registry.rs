//! The one registry of the reactor's sources, in the spirit of calloop's
//! `TokenFactory`: a single slab of [`Entry`]s (connections, listeners,
//! pending handshakes, serving children), each slot stamped with the
//! generation of its [`Key`] (see `token.rs` for the token layout). Every
//! event's token and every handle the caller passes in is checked here, in
//! one place ([`Registry::resolve`], [`Registry::get`]): a stale token (its
//! slot freed, perhaps reused, within one poll batch) or a handle from
//! another reactor or of another kind finds nothing.

use std::io;

use mio::Token;
use slab::Slab;

use crate::conn::Conn;
use crate::error::Error;
use crate::listener::{Listener, Pending, ServerChild};
use crate::token::{Key, Sub, MAX_SLOT};

/// What a slot holds.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A worker's connection (a local worker's, or a remote worker's).
    Conn(Conn),
    /// A listening server.
    Listener(Listener),
    /// An accepted connection answering the authentication challenge.
    Pending(Pending),
    /// A serving child, watched through its pidfd.
    Child(ServerChild),
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    entry: Entry,
}

/// The registry (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    slab: Slab<Slot>,
    /// Live connections.
    conns: usize,
}

/// The registry holds 2³¹ entries: one more cannot get a token.
#[derive(Debug)]
pub(crate) struct Full;

impl From<Full> for Error {
    fn from(_: Full) -> Error {
        Error::io(
            "epoll_ctl",
            io::Error::other("too many sources in one reactor"),
        )
    }
}

fn is_conn(e: &Entry) -> usize {
    usize::from(matches!(e, Entry::Conn(_)))
}

macro_rules! typed {
    ($get:ident, $variant:ident, $ty:ty) => {
        /// The entry under `key`, if it is live and of this kind.
        pub(crate) fn $get(&self, key: Key) -> Option<&$ty> {
            match self.get(key) {
                Some(Entry::$variant(x)) => Some(x),
                _ => None,
            }
        }
    };
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty) => {
        typed!($get, $variant, $ty);
        /// As the shared accessor, mutably.
        pub(crate) fn $get_mut(&mut self, key: Key) -> Option<&mut $ty> {
            match self.get_mut(key) {
                Some(Entry::$variant(x)) => Some(x),
                _ => None,
            }
        }
    };
}

impl Registry {
    /// Inserts the entry `make` builds for its key (it registers the
    /// entry's sources under `key.token(..)` first): the key and its tokens
    /// exist before the entry does, and the entry lands exactly there.
    /// Nothing is inserted when `make` fails; [`Full`] when no slot is left.
    pub(crate) fn insert_with<E: From<Full>>(
        &mut self,
        make: impl FnOnce(Key) -> Result<Entry, E>,
    ) -> Result<Key, E> {
        let vacant = self.slab.vacant_entry();
        let slot = vacant.key();
        if slot > MAX_SLOT as usize {
            return Err(Full.into());
        }
        let key = Key::new(slot as u32);
        let entry = make(key)?;
        self.conns += is_conn(&entry);
        vacant.insert(Slot {
            gen: key.gen,
            entry,
        });
        Ok(key)
    }

    /// The live entry named by `key`.
    pub(crate) fn get(&self, key: Key) -> Option<&Entry> {
        match self.slab.get(key.slot as usize) {
            Some(s) if s.gen == key.gen => Some(&s.entry),
            _ => None,
        }
    }

    /// As [`Registry::get`], mutably.
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut Entry> {
        match self.slab.get_mut(key.slot as usize) {
            Some(s) if s.gen == key.gen => Some(&mut s.entry),
            _ => None,
        }
    }

    /// Removes the live entry named by `key`.
    pub(crate) fn remove(&mut self, key: Key) -> Option<Entry> {
        self.get(key)?;
        let s = self.slab.remove(key.slot as usize);
        self.conns -= is_conn(&s.entry);
        Some(s.entry)
    }

    /// The entry and source an event's token names, if that entry is still
    /// the one the token was made for. Tokens of other shapes (the caller's,
    /// the waker's) find nothing.
    pub(crate) fn resolve(&self, token: Token) -> Option<(Key, Sub)> {
        let (key, sub) = Key::from_token(token)?;
        self.get(key)?;
        Some((key, sub))
    }

    /// Every live entry with its key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, &Entry)> {
        self.slab.iter().map(|(slot, s)| {
            (
                Key {
                    slot: slot as u32,
                    gen: s.gen,
                },
                &s.entry,
            )
        })
    }

    /// Every live entry with its key, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut Entry)> {
        self.slab.iter_mut().map(|(slot, s)| {
            (
                Key {
                    slot: slot as u32,
                    gen: s.gen,
                },
                &mut s.entry,
            )
        })
    }

    /// Removes every entry of which `drop_it` says so.
    pub(crate) fn remove_where(&mut self, mut drop_it: impl FnMut(&Entry) -> bool) {
        let conns = &mut self.conns;
        self.slab.retain(|_, s| {
            let gone = drop_it(&s.entry);
            if gone {
                *conns -= is_conn(&s.entry);
            }
            !gone
        });
    }

    /// No live entry of any kind. O(1): `slab.iter()` would walk every
    /// vacant slot up to the registry's peak size.
    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Room for one more entry (a slot that can get a token), checked
    /// before work that is costly to undo, such as a fork.
    pub(crate) fn has_room(&self) -> bool {
        self.slab.vacant_key() <= MAX_SLOT as usize
    }

    /// Live connections.
    pub(crate) fn conns(&self) -> usize {
        self.conns
    }

    typed!(conn, conn_mut, Conn, Conn);
    typed!(listener, listener_mut, Listener, Listener);
    typed!(pending, Pending, Pending);
    typed!(child, Child, ServerChild);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(pid: libc::pid_t) -> Entry {
        Entry::Child(ServerChild::for_test(pid))
    }

    #[test]
    fn a_stale_token_or_handle_finds_nothing() {
        let mut r = Registry::default();
        let a = r.insert_with::<Full>(|_| Ok(child(1))).expect("insert");
        let t = a.token(Sub::Main);
        assert_eq!(r.resolve(t), Some((a, Sub::Main)));
        assert_eq!(r.resolve(a.token(Sub::Exit)), Some((a, Sub::Exit)));
        assert!(r.remove(a).is_some());
        // The slot is reused with a new generation: the old token and key miss.
        let b = r.insert_with::<Full>(|_| Ok(child(2))).expect("insert");
        assert_eq!(b.slot, a.slot);
        assert_ne!(b.gen, a.gen);
        assert_eq!(r.resolve(t), None);
        assert!(r.get(a).is_none());
        assert!(r.remove(a).is_none());
        assert_eq!(r.iter().count(), 1);
        // Another kind under a live key, and tokens below 2³², find nothing.
        assert!(r.conn(b).is_none());
        assert!(r.listener(b).is_none());
        assert!(r.child(b).is_some());
        assert_eq!(r.resolve(Token(b.slot as usize)), None);
        assert_eq!(r.resolve(Token(0xffff_ffff)), None);
    }

    #[test]
    fn a_failed_make_inserts_nothing() {
        let mut r = Registry::default();
        let failed = r.insert_with::<Full>(|_| Err(Full));
        assert!(failed.is_err());
        assert_eq!(r.iter().count(), 0);
        assert!(r.is_empty());
    }

    /// `is_empty` is the slab's count, not a walk: after a peak of many
    /// entries it answers for the live ones only (the reactor's waits and
    /// drop ask it on every call, so it must not cost the peak size).
    #[test]
    fn is_empty_counts_live_entries_after_a_peak() {
        let mut r = Registry::default();
        assert!(r.is_empty() && r.has_room());
        let keys: Vec<Key> = (0..1000)
            .map(|i| r.insert_with::<Full>(|_| Ok(child(i))).expect("insert"))
            .collect();
        for k in &keys[..999] {
            assert!(r.remove(*k).is_some());
        }
        assert!(!r.is_empty());
        assert!(r.remove(keys[999]).is_some());
        assert!(r.is_empty());
        assert!(r.has_room());
    }
}
