//! A word written with one store, for patching code that other threads may be running.
//!
//! An aligned store of 1, 2, 4 or 8 bytes reaches memory whole on both architectures.
//! aarch64 fetches an aligned instruction word as one single-copy-atomic access, so a
//! thread running code another thread patches with one aligned store sees the old word or
//! the new; x86-64 fetches from the cache line that store updates whole, and detects the
//! store to code it is running (what HotSpot's and V8's patching of aligned displacements
//! relies on). A `memcpy` gives no such promise: it may store a word in pieces, or twice.

/// 1, 2, 4 or 8 bytes, held as the native-endian integer of their width, so that
/// [`Os::store`](crate::Os::store) puts them in memory in the order they were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    /// One byte.
    U8(u8),
    /// Two bytes.
    U16(u16),
    /// Four bytes.
    U32(u32),
    /// Eight bytes.
    U64(u64),
}

impl Word {
    /// The word made of `bytes`, if there are 1, 2, 4 or 8 of them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Word> {
        Some(match *bytes {
            [a] => Word::U8(a),
            [a, b] => Word::U16(u16::from_ne_bytes([a, b])),
            [a, b, c, d] => Word::U32(u32::from_ne_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => Word::U64(u64::from_ne_bytes([a, b, c, d, e, f, g, h])),
            _ => return None,
        })
    }

    /// Its width in bytes, which is also the alignment its store needs.
    pub const fn len(self) -> usize {
        match self {
            Word::U8(_) => 1,
            Word::U16(_) => 2,
            Word::U32(_) => 4,
            Word::U64(_) => 8,
        }
    }

    /// Never: a word has at least one byte.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Its bytes, in memory order, in the first [`len`](Word::len) places.
    pub fn to_bytes(self) -> ([u8; 8], usize) {
        let mut out = [0; 8];
        match self {
            Word::U8(v) => out[0] = v,
            Word::U16(v) => out[..2].copy_from_slice(&v.to_ne_bytes()),
            Word::U32(v) => out[..4].copy_from_slice(&v.to_ne_bytes()),
            Word::U64(v) => out.copy_from_slice(&v.to_ne_bytes()),
        }
        (out, self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::Word;

    #[test]
    fn words_round_trip_their_bytes_and_other_lengths_are_refused() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8];
        for len in [1, 2, 4, 8] {
            let word = Word::from_bytes(&bytes[..len]).expect("a word's width");
            assert_eq!(word.len(), len);
            let (out, n) = word.to_bytes();
            assert_eq!(&out[..n], &bytes[..len]);
        }
        for len in [0, 3, 5, 6, 7] {
            assert_eq!(Word::from_bytes(&bytes[..len]), None, "{len} bytes");
        }
        assert_eq!(Word::from_bytes(&[0; 9]), None);
    }
}
