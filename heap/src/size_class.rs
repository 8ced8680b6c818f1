//! Size classes: ChakraCore's buckets of 128-byte chunks, one per power of two up to the
//! page (128 B .. 4 KiB on 4 KiB pages, .. 16 KiB on Apple's 16 KiB pages).

use crate::error::{Error, Result};

/// Bytes per chunk: the granule of small blocks and their alignment.
pub const CHUNK: usize = 128;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeClass {
    /// A block of `1 << bucket` chunks inside a shared page.
    Small { bucket: usize },
    /// Whole pages of its own.
    Large { pages: usize },
}

impl SizeClass {
    /// The class of a `size`-byte request on `page`-byte pages.
    pub(crate) fn of(size: usize, page: usize) -> Result<SizeClass> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let overflow = Error::SizeOverflow { size };
        if size > page {
            let pages = size.div_ceil(page);
            pages.checked_mul(page).ok_or(overflow)?;
            return Ok(SizeClass::Large { pages });
        }
        let rounded = size.next_power_of_two().max(CHUNK);
        let bucket = (rounded / CHUNK).trailing_zeros() as usize;
        Ok(SizeClass::Small { bucket })
    }

    /// Bytes a block of this class occupies.
    pub(crate) fn capacity(self, page: usize) -> usize {
        match self {
            SizeClass::Small { bucket } => CHUNK << bucket,
            SizeClass::Large { pages } => pages * page,
        }
    }
}

/// Number of small buckets on `page`-byte pages.
pub(crate) fn bucket_count(page: usize) -> usize {
    (page / CHUNK).trailing_zeros() as usize + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_up_to_powers_of_two_of_chunks() {
        let class = |size| SizeClass::of(size, 4096).unwrap();
        assert_eq!(class(1), SizeClass::Small { bucket: 0 });
        assert_eq!(class(128), SizeClass::Small { bucket: 0 });
        assert_eq!(class(129), SizeClass::Small { bucket: 1 });
        assert_eq!(class(3000), SizeClass::Small { bucket: 5 });
        assert_eq!(class(3000).capacity(4096), 4096);
        assert_eq!(class(4096), SizeClass::Small { bucket: 5 });
        assert_eq!(class(4097), SizeClass::Large { pages: 2 });
        assert_eq!(SizeClass::of(0, 4096), Err(Error::ZeroSize));
        assert_eq!(
            SizeClass::of(usize::MAX, 4096),
            Err(Error::SizeOverflow { size: usize::MAX })
        );
    }

    #[test]
    fn sixteen_kib_pages_have_eight_buckets() {
        assert_eq!(bucket_count(4096), 6);
        assert_eq!(bucket_count(16384), 8);
        assert_eq!(
            SizeClass::of(16384, 16384).unwrap(),
            SizeClass::Small { bucket: 7 }
        );
        assert_eq!(SizeClass::of(8000, 16384).unwrap().capacity(16384), 8192);
    }
}
