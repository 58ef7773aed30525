//! How many tasks the next chunk carries: a fixed number, or one learned
//! from the time the workers report per task; and the hasher of the pool's
//! maps keyed by sequential numbers.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use super::options::{Chunking, AUTO_MAX};

/// The worker time an automatic chunk aims to take.
const AUTO_TARGET: Duration = Duration::from_millis(1);

/// A map keyed by a sequential number, hashed by [`IdHasher`].
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The hasher for sequential numbers (call ids): the low bits (the bucket)
/// are the number itself, so entries in flight sit in neighbouring
/// buckets; the top 7 bits (hashbrown's tag) are mixed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        const TAG: u64 = 0xFE00_0000_0000_0000;
        (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) & TAG) | (self.0 & !TAG)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the keys; anything else still hashes.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The chunk size in force.
#[derive(Debug)]
pub(crate) struct Sizer {
    mode: Chunking,
    size: usize,
}

impl Sizer {
    pub(crate) fn new(mode: Chunking) -> Self {
        Sizer {
            mode,
            size: match mode {
                Chunking::Fixed(n) => n.max(1),
                _ => 1,
            },
        }
    }

    /// Whether tasks are packed at all.
    pub(crate) fn on(&self) -> bool {
        self.mode != Chunking::None
    }

    /// The next chunk's size.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// An automatic size learns from a chunk of `n` tasks that took its
    /// worker `work`: the next size fills [`AUTO_TARGET`] at that time per
    /// task, at most twice the current size (growth is gradual, a
    /// slowdown is followed at once), within 1 and [`AUTO_MAX`].
    pub(crate) fn learn(&mut self, n: usize, work: Duration) {
        if self.mode != Chunking::Auto || n == 0 {
            return;
        }
        let per_task = work.as_secs_f64() / n as f64;
        let fits = (AUTO_TARGET.as_secs_f64() / per_task.max(1e-9)).min(AUTO_MAX as f64) as usize;
        self.size = fits.min(2 * self.size).clamp(1, AUTO_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_grows_gradually_and_follows_a_slowdown_at_once() {
        let mut s = Sizer::new(Chunking::Auto);
        assert_eq!(s.size(), 1);
        for want in [2, 4, 8, 16] {
            s.learn(s.size(), Duration::from_nanos(100) * s.size() as u32);
            assert_eq!(s.size(), want);
        }
        s.learn(16, Duration::from_millis(16));
        assert_eq!(s.size(), 1);
        let mut fixed = Sizer::new(Chunking::Fixed(100));
        fixed.learn(100, Duration::from_secs(1));
        assert_eq!(fixed.size(), 100);
    }
}
