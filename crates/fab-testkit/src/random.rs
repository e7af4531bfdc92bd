//! [`SeededRandom`]: a deterministic [`RandomSource`] for tests, so a failing run can be replayed.
//!
//! Bytes are SHA-256(seed || counter) blocks: unpredictable without the seed, repeatable with it.

use fab_core::random::RandomSource;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// A seeded, deterministic random source.
#[derive(Debug)]
pub struct SeededRandom {
    seed: [u8; 32],
    counter: AtomicU64,
}

impl SeededRandom {
    /// A source from a seed.
    pub fn new(seed: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Self {
            seed: bytes,
            counter: AtomicU64::new(0),
        }
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut hasher = Sha256::new();
            hasher.update(self.seed);
            hasher.update(n.to_le_bytes());
            let block = hasher.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, b, c) = (
            SeededRandom::new(1),
            SeededRandom::new(1),
            SeededRandom::new(2),
        );
        let mut x = [0u8; 40];
        let mut y = [0u8; 40];
        let mut z = [0u8; 40];
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
