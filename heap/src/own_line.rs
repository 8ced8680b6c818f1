//! A value on cache lines of its own.

/// Keeps `T` off the cache lines of its neighbours: the heap's epoch is read by every
/// thread that asks for an entry point, and must not share a line with the lock and the
/// books written under it, or each allocation would cost every executor a cache miss (and
/// the writer one back). 128 bytes: Apple's M-series lines, and Intel's adjacent-line pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct OwnLine<T>(pub(crate) T);

impl<T> core::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

const _: () = assert!(core::mem::align_of::<OwnLine<u64>>() == 128);
const _: () = assert!(core::mem::size_of::<OwnLine<u64>>() == 128);
