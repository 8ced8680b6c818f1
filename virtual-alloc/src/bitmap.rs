//! Bitmaps: page states of a segment, free chunks of a heap page, slots of a secondary
//! area. Bookkeeping lives here, outside executable memory, so corrupted code cannot
//! corrupt the allocator (asmjit's and ChakraCore's choice too).
//!
//! One set of operations, [`Bits`], over three kinds of storage: a fixed array
//! ([`Bitmap`], for sizes known when compiling), a boxed slice sized when made ([`BitVec`],
//! for sizes a configuration sets), and a borrowed slice (a view of words kept elsewhere,
//! such as a table of many equal bitmaps). Sizing a bitmap to what it tracks matters: the
//! heap keeps one per page, the page allocator several per segment.

/// The first `len` bits of the words `S` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bits<S> {
    words: S,
    len: usize,
}

/// Up to `64 * WORDS` bits, stored inline.
pub type Bitmap<const WORDS: usize> = Bits<[u64; WORDS]>;

/// As many bits as were asked for when it was made, stored in a boxed slice.
pub type BitVec = Bits<Box<[u64]>>;

/// Words needed for `len` bits.
pub const fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

impl<const WORDS: usize> Bits<[u64; WORDS]> {
    /// The most bits a bitmap of this size holds.
    pub const CAPACITY: usize = 64 * WORDS;

    /// `len` bits, all clear.
    ///
    /// # Panics
    /// If `len` exceeds [`CAPACITY`](Self::CAPACITY): callers validate sizes first.
    pub const fn new(len: usize) -> Self {
        assert!(len <= Self::CAPACITY, "bitmap length exceeds its capacity");
        Bits {
            words: [0; WORDS],
            len,
        }
    }

    /// `len` bits, all set.
    pub fn full(len: usize) -> Self {
        let mut bitmap = Self::new(len);
        bitmap.set_range(0, len);
        bitmap
    }

    /// The bitwise or of two bitmaps of the same length.
    pub fn union(&self, other: &Self) -> Self {
        debug_assert_eq!(self.len, other.len);
        Bits {
            words: core::array::from_fn(|w| self.words[w] | other.words[w]),
            len: self.len,
        }
    }
}

impl Bits<Box<[u64]>> {
    /// `len` bits, all clear, in as many words as they need.
    pub fn zeroed(len: usize) -> Self {
        Bits {
            words: vec![0; words_for(len)].into_boxed_slice(),
            len,
        }
    }

    /// `len` bits, all set.
    pub fn ones(len: usize) -> Self {
        let mut bits = Self::zeroed(len);
        bits.set_range(0, len);
        bits
    }
}

impl<'a> Bits<&'a [u64]> {
    /// The first `len` bits of `words`, read only.
    ///
    /// # Panics
    /// If `words` holds fewer than `len` bits.
    #[inline]
    pub fn view(words: &'a [u64], len: usize) -> Self {
        assert!(len <= 64 * words.len(), "bitmap length exceeds its words");
        Bits { words, len }
    }
}

impl<'a> Bits<&'a mut [u64]> {
    /// The first `len` bits of `words`, to change in place.
    ///
    /// # Panics
    /// If `words` holds fewer than `len` bits.
    #[inline]
    pub fn view_mut(words: &'a mut [u64], len: usize) -> Self {
        assert!(len <= 64 * words.len(), "bitmap length exceeds its words");
        Bits { words, len }
    }
}

impl<S: AsRef<[u64]>> Bits<S> {
    #[inline]
    fn words(&self) -> &[u64] {
        self.words.as_ref()
    }

    /// Number of meaningful bits.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the bitmap has no bits at all.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i`.
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        debug_assert!(i < self.len);
        self.words()[i / 64] & (1 << (i % 64)) != 0
    }

    /// Mask of the bits of word `w` that fall in `start..end`.
    fn mask(w: usize, start: usize, end: usize) -> u64 {
        let lo = start.max(w * 64) - w * 64;
        let hi = end.min(w * 64 + 64) - w * 64;
        if hi <= lo {
            0
        } else if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        }
    }

    fn words_of(start: usize, end: usize) -> core::ops::Range<usize> {
        start / 64..end.div_ceil(64)
    }

    /// The word and mask of `start..start + n` when the range lies in one word, as the
    /// heap's blocks mostly do (under power-of-two classes, always: aligned runs of at most
    /// 64 chunks).
    #[inline]
    fn within_one_word(start: usize, n: usize) -> Option<(usize, u64)> {
        let lo = start % 64;
        match lo + n {
            // An empty range may start just past the last word: no word to touch (the
            // caller's loop over `words_of` touches none either).
            _ if n == 0 => None,
            0..64 => Some((start / 64, ((1u64 << n) - 1) << lo)),
            64 => Some((start / 64, u64::MAX << lo)),
            _ => None,
        }
    }

    /// Whether every bit of `start..start + n` is set.
    #[inline]
    pub fn all_set(&self, start: usize, n: usize) -> bool {
        Self::words_of(start, start + n).all(|w| {
            let mask = Self::mask(w, start, start + n);
            self.words()[w] & mask == mask
        })
    }

    /// Whether any bit of `start..start + n` is set.
    pub fn any_set(&self, start: usize, n: usize) -> bool {
        Self::words_of(start, start + n)
            .any(|w| self.words()[w] & Self::mask(w, start, start + n) != 0)
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words().iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The first set bit at or after `from`.
    #[inline]
    pub fn next_set(&self, from: usize) -> Option<usize> {
        self.next_matching(from, |word| word)
    }

    /// The first clear bit at or after `from` (below `len`).
    pub fn next_clear(&self, from: usize) -> Option<usize> {
        self.next_matching(from, |word| !word)
    }

    #[inline]
    fn next_matching(&self, from: usize, view: impl Fn(u64) -> u64) -> Option<usize> {
        let mut w = from / 64;
        let mut word = view(self.words().get(w).copied()?) & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let bit = w * 64 + word.trailing_zeros() as usize;
                return (bit < self.len).then_some(bit);
            }
            w += 1;
            word = view(*self.words().get(w)?);
        }
    }

    /// The start of the first run of `n` set bits (first fit), if any.
    pub fn find_run(&self, n: usize) -> Option<usize> {
        if n == 0 || n > self.len {
            return None;
        }
        let mut from = 0;
        while let Some(start) = self.next_set(from) {
            if start + n > self.len {
                return None;
            }
            let end = self.next_clear(start).unwrap_or(self.len);
            if end - start >= n {
                return Some(start);
            }
            from = end;
        }
        None
    }

    /// The length of the longest run of set bits (0 if none is set).
    ///
    /// Word by word, a step per run rather than per bit (chunk classes ask this on every
    /// allocation and free): a run that reaches a word's top carries into the next word.
    /// Bits past `len` are never set, so they end every run.
    pub fn longest_run(&self) -> usize {
        let (mut best, mut carry) = (0, 0);
        for &word in self.words() {
            if word == u64::MAX {
                carry += 64;
                continue;
            }
            best = best.max(carry + word.trailing_ones() as usize);
            let mut rest = word;
            while rest != 0 {
                rest >>= rest.trailing_zeros();
                let ones = rest.trailing_ones();
                best = best.max(ones as usize);
                // `ones` < 64: the word is not all ones.
                rest >>= ones;
            }
            carry = word.leading_ones() as usize;
        }
        best.max(carry)
    }

    /// Best fit: the start and length of the shortest run of at least `n` set bits (the
    /// lowest of equals).
    pub fn best_run(&self, n: usize) -> Option<(usize, usize)> {
        if n == 0 {
            return None;
        }
        let mut best: Option<(usize, usize)> = None;
        for (start, len) in self.runs() {
            if len >= n && best.is_none_or(|(_, best_len)| len < best_len) {
                best = Some((start, len));
                if len == n {
                    break;
                }
            }
        }
        best
    }

    /// Whether the two bitmaps share a set bit.
    pub fn intersects(&self, other: &Self) -> bool {
        self.words()
            .iter()
            .zip(other.words())
            .any(|(a, b)| a & b != 0)
    }

    /// Iterates over the runs of set bits as `(start, length)`.
    pub fn runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut from = 0;
        core::iter::from_fn(move || {
            let start = self.next_set(from)?;
            let end = self.next_clear(start).unwrap_or(self.len);
            from = end;
            Some((start, end - start))
        })
    }
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> Bits<S> {
    /// Sets bits `start..start + n`.
    #[inline]
    pub fn set_range(&mut self, start: usize, n: usize) {
        debug_assert!(start + n <= self.len);
        if let Some((w, mask)) = Self::within_one_word(start, n) {
            self.words.as_mut()[w] |= mask;
            return;
        }
        for w in Self::words_of(start, start + n) {
            self.words.as_mut()[w] |= Self::mask(w, start, start + n);
        }
    }

    /// Clears bits `start..start + n`.
    #[inline]
    pub fn clear_range(&mut self, start: usize, n: usize) {
        debug_assert!(start + n <= self.len);
        if let Some((w, mask)) = Self::within_one_word(start, n) {
            self.words.as_mut()[w] &= !mask;
            return;
        }
        for w in Self::words_of(start, start + n) {
            self.words.as_mut()[w] &= !Self::mask(w, start, start + n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cross_word_boundaries() {
        let mut bitmap = Bitmap::<2>::new(100);
        bitmap.set_range(60, 10);
        assert!(bitmap.all_set(60, 10));
        assert!(!bitmap.any_set(0, 60));
        assert!(!bitmap.any_set(70, 30));
        assert_eq!(bitmap.count_ones(), 10);
        bitmap.clear_range(63, 2);
        assert_eq!(bitmap.runs().collect::<Vec<_>>(), [(60, 3), (65, 5)]);
    }

    proptest::proptest! {
        #![proptest_config(codeheap_test_support::proptest_config(256, 4))]

        /// Range updates agree with bit-by-bit ones, within a word, up to a word's end and
        /// across words.
        #[test]
        fn ranges_match_a_bit_by_bit_model(
            ops in proptest::collection::vec((proptest::bool::ANY, 0usize..130, 0usize..130), 1..40)
        ) {
            // The three storages, driven alike: inline, boxed, and a view of a word table
            // (between two other pages' words, which must not change).
            let mut bitmap = Bitmap::<3>::new(130);
            let mut boxed = BitVec::zeroed(130);
            let mut table = [u64::MAX; 9];
            let mut model = [false; 130];
            Bits::view_mut(&mut table[3..6], 130).clear_range(0, 130);
            for (set, start, n) in ops {
                let n = n.min(130 - start);
                let mut view = Bits::view_mut(&mut table[3..6], 130);
                if set {
                    bitmap.set_range(start, n);
                    boxed.set_range(start, n);
                    view.set_range(start, n);
                } else {
                    bitmap.clear_range(start, n);
                    boxed.clear_range(start, n);
                    view.clear_range(start, n);
                }
                model[start..start + n].fill(set);
                let view = Bits::view(&table[3..6], 130);
                for (i, &bit) in model.iter().enumerate() {
                    proptest::prop_assert_eq!(bitmap.get(i), bit, "bit {}", i);
                    proptest::prop_assert_eq!(boxed.get(i), bit, "boxed bit {}", i);
                    proptest::prop_assert_eq!(view.get(i), bit, "view bit {}", i);
                }
                proptest::prop_assert_eq!(view.runs().collect::<Vec<_>>(), bitmap.runs().collect::<Vec<_>>());
                proptest::prop_assert!(table[..3].iter().chain(&table[6..]).all(|&w| w == u64::MAX));
            }
        }
    }

    #[test]
    fn one_word_ranges_stop_at_the_word() {
        let mut bitmap = Bitmap::<2>::new(128);
        bitmap.set_range(32, 32);
        assert_eq!(bitmap.runs().collect::<Vec<_>>(), [(32, 32)]);
        bitmap.set_range(0, 64);
        bitmap.clear_range(63, 1);
        assert_eq!(bitmap.runs().collect::<Vec<_>>(), [(0, 63)]);
        bitmap.set_range(64, 0);
        assert_eq!(bitmap.count_ones(), 63);
    }

    #[test]
    fn empty_ranges_at_the_end_of_a_full_bitmap_touch_nothing() {
        // A segment whose every code page is taken at once marks none decommitted:
        // `set_range(64, 0)` on 64 bits, one word.
        let mut bitmap = Bitmap::<1>::full(64);
        bitmap.set_range(64, 0);
        bitmap.clear_range(64, 0);
        assert_eq!(bitmap.count_ones(), 64);
        let mut words = [0u64; 2];
        let mut view = Bits::view_mut(&mut words, 128);
        view.set_range(128, 0);
        view.clear_range(128, 0);
        assert_eq!(view.count_ones(), 0);
    }

    #[test]
    fn find_run_is_first_fit() {
        let mut bitmap = Bitmap::<1>::new(32);
        bitmap.set_range(2, 2);
        bitmap.set_range(8, 5);
        bitmap.set_range(20, 12);
        assert_eq!(bitmap.find_run(1), Some(2));
        assert_eq!(bitmap.find_run(3), Some(8));
        assert_eq!(bitmap.find_run(6), Some(20));
        assert_eq!(bitmap.find_run(12), Some(20));
        assert_eq!(bitmap.find_run(13), None);
        assert_eq!(bitmap.find_run(0), None);
    }

    #[test]
    fn best_run_is_the_shortest_that_fits() {
        let mut bitmap = Bitmap::<2>::new(100);
        bitmap.set_range(2, 6);
        bitmap.set_range(10, 3);
        bitmap.set_range(20, 4);
        bitmap.set_range(62, 3);
        assert_eq!(bitmap.best_run(1), Some((10, 3)));
        assert_eq!(bitmap.best_run(3), Some((10, 3)));
        assert_eq!(bitmap.best_run(4), Some((20, 4)));
        assert_eq!(bitmap.best_run(5), Some((2, 6)));
        assert_eq!(bitmap.best_run(7), None);
        assert_eq!(bitmap.best_run(0), None);
    }

    #[test]
    fn bits_past_len_are_never_found() {
        let bitmap = Bitmap::<1>::full(10);
        assert_eq!(bitmap.count_ones(), 10);
        assert_eq!(bitmap.next_clear(0), None);
        assert_eq!(bitmap.find_run(10), Some(0));
        assert_eq!(bitmap.find_run(11), None);
        let full = Bitmap::<1>::full(64);
        assert_eq!(full.find_run(64), Some(0));
    }

    proptest::proptest! {
        #![proptest_config(codeheap_test_support::proptest_config(256, 4))]

        #[test]
        fn longest_run_is_the_longest_of_the_runs(
            len in 1usize..=192,
            ranges in proptest::collection::vec((0usize..192, 0usize..80), 0..8)
        ) {
            let mut bitmap = Bitmap::<3>::new(len);
            for (start, n) in ranges {
                let start = start % len;
                bitmap.set_range(start, n.min(len - start));
            }
            let longest = bitmap.runs().map(|(_, n)| n).max().unwrap_or(0);
            proptest::prop_assert_eq!(bitmap.longest_run(), longest);
        }
    }

    #[test]
    fn longest_run_spans_words() {
        let mut bitmap = Bitmap::<2>::new(128);
        assert_eq!(bitmap.longest_run(), 0);
        bitmap.set_range(3, 5);
        bitmap.set_range(60, 9);
        assert_eq!(bitmap.longest_run(), 9);
        bitmap.set_range(100, 28);
        assert_eq!(bitmap.longest_run(), 28);
    }

    #[test]
    fn boxed_bitmaps_are_sized_to_their_length() {
        assert_eq!(BitVec::zeroed(128).words.len(), 2);
        assert_eq!(BitVec::zeroed(129).words.len(), 3);
        let ones = BitVec::ones(70);
        assert_eq!(ones.count_ones(), 70);
        assert_eq!(ones.next_clear(0), None);
        assert_eq!(ones.find_run(70), Some(0));
    }

    #[test]
    fn a_view_cannot_claim_more_bits_than_its_words() {
        let words = [0u64; 2];
        assert!(std::panic::catch_unwind(|| Bits::view(&words, 129)).is_err());
        assert_eq!(Bits::view(&words, 128).len(), 128);
    }

    #[test]
    fn union_and_intersection() {
        let mut a = Bitmap::<1>::new(8);
        let mut b = Bitmap::<1>::new(8);
        a.set_range(0, 2);
        b.set_range(4, 2);
        assert!(!a.intersects(&b));
        assert_eq!(a.union(&b).count_ones(), 4);
        b.set_range(1, 1);
        assert!(a.intersects(&b));
    }
}
