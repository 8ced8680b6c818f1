//! Size classes: ChakraCore's buckets of 128-byte chunks, one per power of two up to the
//! page (128 B .. 4 KiB on 4 KiB pages, .. 16 KiB on Apple's 16 KiB pages). A request is
//! rounded to its bucket's size ([`SizeClasses::PowerOfTwo`]) or only to whole chunks
//! ([`SizeClasses::Chunks`]); either way its bucket is the power of two it rounds up to.

use crate::config::SizeClasses;
use crate::error::{Error, Result};

/// Bytes per chunk: the granule of small blocks and their alignment.
pub const CHUNK: usize = 128;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeClass {
    /// A block of `chunks` chunks inside a shared page, in `bucket` (the power of two the
    /// chunks round up to).
    Small { bucket: usize, chunks: usize },
    /// Whole pages of its own.
    Large { pages: usize },
}

impl SizeClass {
    /// The class of a `size`-byte request on `page`-byte pages: `ZeroSize`, or
    /// `SizeOverflow` for 4 GiB or more (a record keeps a block's size in 32 bits).
    #[inline]
    pub(crate) fn of(size: usize, page: usize, classes: SizeClasses) -> Result<SizeClass> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let overflow = Error::SizeOverflow { size };
        u32::try_from(size).map_err(|_| overflow.clone())?;
        if size > page {
            size.checked_next_multiple_of(page).ok_or(overflow)?;
        }
        Ok(SizeClass::of_accepted(size, page, classes))
    }

    /// The class of a size [`of`](SizeClass::of) accepts (a recorded block's).
    #[inline]
    pub(crate) fn of_accepted(size: usize, page: usize, classes: SizeClasses) -> SizeClass {
        if size > page {
            return SizeClass::Large {
                pages: size.div_ceil(page),
            };
        }
        let needed = size.div_ceil(CHUNK);
        let bucket = bucket_of(needed);
        let chunks = match classes {
            SizeClasses::PowerOfTwo => 1 << bucket,
            SizeClasses::Chunks => needed,
        };
        SizeClass::Small { bucket, chunks }
    }

    /// Bytes a block of this class occupies.
    #[inline]
    pub(crate) fn capacity(self, page: usize) -> usize {
        match self {
            SizeClass::Small { chunks, .. } => chunks * CHUNK,
            SizeClass::Large { pages } => pages * page,
        }
    }
}

/// The bucket of `chunks` chunks (at least one): the power of two they round up to.
pub(crate) fn bucket_of(chunks: usize) -> usize {
    chunks.next_power_of_two().trailing_zeros() as usize
}

/// Number of lists of pages with free chunks the heap keeps: one per bucket under
/// power-of-two classes, one per length of a free run (`0..=chunks per page`) under chunk
/// classes.
pub(crate) fn list_count(classes: SizeClasses, page: usize) -> usize {
    match classes {
        SizeClasses::PowerOfTwo => bucket_count(page),
        SizeClasses::Chunks => page / CHUNK + 1,
    }
}

/// Number of small buckets on `page`-byte pages.
pub(crate) fn bucket_count(page: usize) -> usize {
    (page / CHUNK).trailing_zeros() as usize + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(bucket: usize, chunks: usize) -> SizeClass {
        SizeClass::Small { bucket, chunks }
    }

    #[test]
    fn requests_round_up_to_powers_of_two_of_chunks() {
        let class = |size| SizeClass::of(size, 4096, SizeClasses::PowerOfTwo).unwrap();
        assert_eq!(class(1), small(0, 1));
        assert_eq!(class(128), small(0, 1));
        assert_eq!(class(129), small(1, 2));
        assert_eq!(class(3000), small(5, 32));
        assert_eq!(class(3000).capacity(4096), 4096);
        assert_eq!(class(4096), small(5, 32));
        assert_eq!(class(4097), SizeClass::Large { pages: 2 });
        for classes in [SizeClasses::PowerOfTwo, SizeClasses::Chunks] {
            assert_eq!(SizeClass::of(0, 4096, classes), Err(Error::ZeroSize));
            assert_eq!(
                SizeClass::of(usize::MAX, 4096, classes),
                Err(Error::SizeOverflow { size: usize::MAX })
            );
            // Up to 4 GiB less a byte: a record keeps the size in 32 bits.
            let most = u32::MAX as usize;
            assert_eq!(
                SizeClass::of(most, 4096, classes),
                Ok(SizeClass::Large {
                    pages: most.div_ceil(4096)
                })
            );
            assert_eq!(
                SizeClass::of(most + 1, 4096, classes),
                Err(Error::SizeOverflow { size: most + 1 })
            );
        }
    }

    #[test]
    fn chunk_classes_round_to_whole_chunks_in_the_same_buckets() {
        let class = |size| SizeClass::of(size, 4096, SizeClasses::Chunks).unwrap();
        assert_eq!(class(1), small(0, 1));
        assert_eq!(class(129), small(1, 2));
        assert_eq!(class(257), small(2, 3));
        assert_eq!(class(3000), small(5, 24));
        assert_eq!(class(3000).capacity(4096), 3072);
        assert_eq!(class(4096), small(5, 32));
        assert_eq!(class(4097), SizeClass::Large { pages: 2 });
    }

    #[test]
    fn sixteen_kib_pages_have_eight_buckets() {
        assert_eq!(bucket_count(4096), 6);
        assert_eq!(bucket_count(16384), 8);
        let pow2 = SizeClasses::PowerOfTwo;
        assert_eq!(SizeClass::of(16384, 16384, pow2).unwrap(), small(7, 128));
        assert_eq!(
            SizeClass::of(8000, 16384, pow2).unwrap().capacity(16384),
            8192
        );
    }
}
