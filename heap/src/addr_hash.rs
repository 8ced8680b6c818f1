//! A hasher for addresses: block and page addresses are multiples of 128, so a
//! multiplicative hash of the address is enough, and much cheaper than SipHash on the
//! allocation path. The keys are not attacker-chosen (the heap picks every address).

use core::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, addr: usize) {
        self.0 = ((addr as u64) >> 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type AddrMap<V> = std::collections::HashMap<usize, V, BuildHasherDefault<AddrHasher>>;
