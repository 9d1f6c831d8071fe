//! Pure helpers the workloads share: key names, values, a tiny PRNG, rate pacing and the
//! weighted choice of `k8s-mix`.

use std::time::Duration;

/// The key for index `n` under `prefix`: the index in decimal, zero-padded so that keys sort in
/// index order and have exactly `key_size` bytes after the prefix (as etcd's benchmark keeps
/// every key the same size). Digits that do not fit are dropped from the left, so a key space
/// larger than `10^key_size` wraps around instead of growing the key.
pub fn key(prefix: &[u8], n: u64, key_size: usize) -> Vec<u8> {
    let digits = format!("{n:0key_size$}");
    let tail = &digits.as_bytes()[digits.len().saturating_sub(key_size)..];
    let mut k = Vec::with_capacity(prefix.len() + key_size);
    k.extend_from_slice(prefix);
    k.extend_from_slice(tail);
    k
}

/// A value of `size` bytes. Filled with a repeating printable pattern rather than zeros so a
/// store that compresses values does not get an unfair advantage over one that does not.
pub fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// splitmix64: a small, fast, well-distributed generator; benchmark keys need spread, not
/// cryptographic quality, and a fixed seed per client makes runs repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0). The modulo bias is negligible for key spaces far
    /// below 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// When operation number `i` (0-based, counted over all clients) may start under a global rate
/// limit of `rate` operations per second: evenly spaced slots from the start of the run.
pub fn slot_offset(i: u64, rate: f64) -> Duration {
    if rate <= 0.0 || !rate.is_finite() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(i as f64 / rate)
}

/// Picks an index from `weights` given a draw `r` in `0..sum(weights)`.
pub fn pick_weighted(weights: &[u32], r: u64) -> usize {
    let mut acc = 0u64;
    for (i, w) in weights.iter().enumerate() {
        acc += u64::from(*w);
        if r < acc {
            return i;
        }
    }
    weights.len().saturating_sub(1)
}

/// The keys of `0..space` that client `client` of `clients` owns: every `clients`-th key, so
/// each client updates its own objects as a Kubernetes controller updates the objects it manages
/// and conflicts come only from stale reads, not from every client fighting over every key.
pub fn owned(space: u64, client: usize, clients: usize) -> Vec<u64> {
    let clients = clients.max(1) as u64;
    (client as u64..space).step_by(clients as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_and_sort_by_index() {
        assert_eq!(key(b"p/", 42, 6), b"p/000042");
        assert_eq!(key(b"", 0, 3), b"000");
        // Wraps rather than growing.
        assert_eq!(key(b"", 12345, 3), b"345");
        assert!(key(b"", 9, 4) < key(b"", 10, 4));
    }

    #[test]
    fn values_have_the_requested_size() {
        assert_eq!(value(0), b"");
        assert_eq!(value(30).len(), 30);
        assert_eq!(&value(3), b"abc");
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| *x < 10));
        // All ten values show up in 100 draws: the spread is not degenerate.
        let mut seen = [false; 10];
        for x in xs {
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn slots_are_evenly_spaced() {
        assert_eq!(slot_offset(0, 100.0), Duration::ZERO);
        assert_eq!(slot_offset(50, 100.0), Duration::from_millis(500));
        assert_eq!(slot_offset(1000, 0.0), Duration::ZERO);
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let w = [3, 0, 1];
        assert_eq!(pick_weighted(&w, 0), 0);
        assert_eq!(pick_weighted(&w, 2), 0);
        assert_eq!(pick_weighted(&w, 3), 2);
        assert_eq!(pick_weighted(&w, 99), 2);
        assert_eq!(pick_weighted(&[], 0), 0);
    }

    #[test]
    fn ownership_partitions_the_key_space() {
        let mut all: Vec<u64> = (0..3).flat_map(|c| owned(10, c, 3)).collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(owned(10, 1, 3), vec![1, 4, 7]);
        assert!(owned(2, 5, 8).is_empty());
    }
}
