//! A tiny deterministic PRNG (splitmix64): the simulator needs reproducible draws, not quality.

/// splitmix64 generator. The same seed always yields the same sequence.
#[derive(Clone, Debug)]
pub struct Prng {
    state: u64,
}

impl Prng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Prng { state: seed }
    }

    /// A generator for one purpose (probes, API faults...) derived from `seed`, so that draws for
    /// one purpose do not shift the sequence of another.
    pub fn stream(seed: u64, purpose: u64) -> Self {
        let mut p = Prng::new(seed ^ purpose.wrapping_mul(0xA076_1D64_78BD_642F));
        p.next_u64();
        p
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An integer in `[0, n)` (`0` when `n` is zero).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Whether an event of probability `p` happens.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let a: Vec<u64> = (0..5).scan(Prng::new(7), |p, _| Some(p.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Prng::new(7), |p, _| Some(p.next_u64())).collect();
        assert_eq!(a, b);
        let mut p = Prng::new(1);
        for _ in 0..1000 {
            let f = p.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(p.below(10) < 10);
        }
        assert!(!p.chance(0.0));
        assert_ne!(Prng::stream(1, 1).next_u64(), Prng::stream(1, 2).next_u64());
    }
}
