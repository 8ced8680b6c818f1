//! Request sizes from a fixed seed: 70 % 64–512 B, 25 % 512–4096 B, 5 % 4–64 KiB.

/// The seed every workload starts from, so every row sees the same sequence.
pub const SEED: u64 = 0x00C0_DE4E_A9B1_7E57;

/// SplitMix64: small, fast and the same on every machine and toolchain.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift: no division on the hot path.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// Where a size comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// The mixed distribution of the issue.
    Mix,
    /// Always this many bytes.
    Fixed(usize),
}

/// A stream of request sizes.
#[derive(Debug, Clone)]
pub struct SizeStream {
    rng: Rng,
    sizes: Sizes,
}

impl SizeStream {
    /// Sizes from [`SEED`].
    pub fn new(sizes: Sizes) -> SizeStream {
        SizeStream {
            rng: Rng::new(SEED),
            sizes,
        }
    }

    /// The next size.
    pub fn next_size(&mut self) -> usize {
        match self.sizes {
            Sizes::Fixed(size) => size,
            Sizes::Mix => mixed(&mut self.rng),
        }
    }

    /// The generator, for the other random choices of a workload (which block to free).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

/// One size of the mix: 70 % 64–512 B, 25 % 512–4096 B, 5 % 4–64 KiB, uniform within each.
pub fn mixed(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..70 => rng.between(64, 512),
        70..95 => rng.between(513, 4096),
        _ => rng.between(4097, 64 * 1024),
    }
}

/// Mean bytes per request of the mix (for the docs' arithmetic).
pub const MIX_MEAN: f64 = 0.70 * 288.0 + 0.25 * 2304.5 + 0.05 * 34_816.5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_its_shares_and_bounds() {
        let mut stream = SizeStream::new(Sizes::Mix);
        let (mut small, mut medium, mut large, mut sum) = (0, 0, 0, 0usize);
        let n = 200_000;
        for _ in 0..n {
            let size = stream.next_size();
            assert!((64..=65_536).contains(&size));
            match size {
                ..=512 => small += 1,
                513..=4096 => medium += 1,
                _ => large += 1,
            }
            sum += size;
        }
        let share = |count: i32| f64::from(count) / f64::from(n);
        assert!((share(small) - 0.70).abs() < 0.01);
        assert!((share(medium) - 0.25).abs() < 0.01);
        assert!((share(large) - 0.05).abs() < 0.005);
        let mean = sum as f64 / f64::from(n);
        assert!((mean / MIX_MEAN - 1.0).abs() < 0.03, "mean {mean}");
    }

    #[test]
    fn the_stream_is_the_same_every_time() {
        let mut a = SizeStream::new(Sizes::Mix);
        let mut b = SizeStream::new(Sizes::Mix);
        for _ in 0..1000 {
            assert_eq!(a.next_size(), b.next_size());
        }
    }
}
