//! A table keyed by [`Worker`]: one place per worker, found by the slot
//! number its handle carries (no hashing), checked against the handle's
//! generation, so a handle of a worker that is gone finds nothing even
//! after its slot number was given to another.

use crate::worker::Worker;

/// Values by worker (see the module docs).
#[derive(Debug)]
pub(crate) struct Slots<T> {
    places: Vec<Option<(Worker, T)>>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            places: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Puts `value` in `w`'s place; a value left there by a worker of the
    /// same slot is replaced (and returned).
    pub(crate) fn insert(&mut self, w: Worker, value: T) -> Option<T> {
        let i = w.key.slot as usize;
        if i >= self.places.len() {
            self.places.resize_with(i + 1, || None);
        }
        let old = self.places[i].replace((w, value));
        if old.is_none() {
            self.len += 1;
        }
        old.map(|(_, v)| v)
    }

    pub(crate) fn get(&self, w: Worker) -> Option<&T> {
        match self.places.get(w.key.slot as usize)? {
            Some((k, v)) if *k == w => Some(v),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, w: Worker) -> Option<&mut T> {
        match self.places.get_mut(w.key.slot as usize)? {
            Some((k, v)) if *k == w => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, w: Worker) -> Option<T> {
        let place = self.places.get_mut(w.key.slot as usize)?;
        if !matches!(place, Some((k, _)) if *k == w) {
            return None;
        }
        self.len -= 1;
        place.take().map(|(_, v)| v)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every worker and its value, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Worker, &T)> {
        self.places.iter().flatten().map(|(w, v)| (*w, v))
    }

    /// Empties the table.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.places.clear();
    }
}
