//! Instruction-set facts the memory layers need: the trap instruction freed code is filled
//! with, instruction alignment, and a tiny emitter for "return a constant" functions that
//! tests, demos and benchmarks run through real function pointers.

/// An instruction set codeheap runs on (natively, or in the simulated OS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64: traps are `int3` (`0xCC`), instructions are byte-aligned.
    X86_64,
    /// AArch64: traps are `BRK #0xF000`, instructions are 4-byte words.
    Aarch64,
}

/// The little-endian word of `BRK #0xF000`, the aarch64 trap freed code is filled with.
pub const AARCH64_BRK: u32 = 0xD43E_0000;

const AARCH64_BRK_BYTES: [u8; 4] = AARCH64_BRK.to_le_bytes();

/// `int3`.
pub const X86_INT3: u8 = 0xCC;

/// Bytes [`Arch::is_trap_filled`] compares at once: whole trap words on every arch, so each
/// block but the last starts a word.
const TRAP_BLOCK: usize = 256;
const _: () = assert!(TRAP_BLOCK.is_multiple_of(AARCH64_BRK_BYTES.len()));

const AARCH64_RET: u32 = 0xD65F_03C0;
const AARCH64_MOVZ_W0: u32 = 0x5280_0000;
const AARCH64_MOVK_W0_LSL16: u32 = 0x72A0_0000;

impl Arch {
    /// The machine this code was compiled for.
    pub const fn host() -> Arch {
        #[cfg(target_arch = "x86_64")]
        {
            Arch::X86_64
        }
        #[cfg(target_arch = "aarch64")]
        {
            Arch::Aarch64
        }
    }

    /// The trap instruction's bytes: `[0xCC]` or the `BRK #0xF000` word.
    pub const fn trap_bytes(self) -> &'static [u8] {
        match self {
            Arch::X86_64 => &[X86_INT3],
            Arch::Aarch64 => &AARCH64_BRK_BYTES,
        }
    }

    /// The alignment every instruction (and so every entry point) has.
    pub const fn instruction_alignment(self) -> usize {
        match self {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 4,
        }
    }

    /// How far a direct call reaches, either way: `call rel32` on x86-64 (±2 GiB), `bl` on
    /// aarch64 (±128 MiB). Code that calls other code directly needs both within this of
    /// each other, which a [code range](crate::VirtualAlloc::with_code_range) no larger
    /// guarantees.
    pub const fn call_reach(self) -> usize {
        match self {
            Arch::X86_64 => 2 << 30,
            Arch::Aarch64 => 128 << 20,
        }
    }

    /// Fills `buf`, which starts at an instruction-aligned address, with traps. On aarch64
    /// trailing bytes that are not a whole word are zeroed.
    pub fn fill_traps(self, buf: &mut [u8]) {
        crate::os::fill_pattern(buf, self.trap_bytes());
    }

    /// Whether every byte of `bytes` (starting instruction-aligned) is the trap pattern as
    /// [`fill_traps`](Arch::fill_traps) writes it.
    pub fn is_trap_filled(self, bytes: &[u8]) -> bool {
        // A block of traps at a time: slice equality is one `memcmp`, where a word at a time
        // is a loop miri interprets step by step over every page the invariant checks read.
        let mut traps = [0; TRAP_BLOCK];
        self.fill_traps(&mut traps);
        let whole = bytes.len() / self.trap_bytes().len() * self.trap_bytes().len();
        let (body, tail) = bytes.split_at(whole);
        tail.iter().all(|&b| b == 0)
            && body
                .chunks(TRAP_BLOCK)
                .all(|chunk| chunk == &traps[..chunk.len()])
    }

    /// Machine code for `extern "C" fn() -> u32 { value }`:
    /// x86-64 `mov eax, imm32; ret`; aarch64 `mov w0, #lo; [movk w0, #hi, lsl #16;] ret`.
    #[inline]
    pub fn encode_return_u32(self, value: u32) -> TinyCode {
        let mut code = TinyCode::default();
        match self {
            Arch::X86_64 => {
                code.push(&[0xB8]);
                code.push(&value.to_le_bytes());
                code.push(&[0xC3]);
            }
            Arch::Aarch64 => {
                let low = value & 0xFFFF;
                let high = value >> 16;
                code.push(&(AARCH64_MOVZ_W0 | (low << 5)).to_le_bytes());
                if high != 0 {
                    code.push(&(AARCH64_MOVK_W0_LSL16 | (high << 5)).to_le_bytes());
                }
                code.push(&AARCH64_RET.to_le_bytes());
            }
        }
        code
    }
}

/// A few bytes of machine code, held inline so emitting it allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TinyCode {
    bytes: [u8; 16],
    len: usize,
}

impl TinyCode {
    #[inline]
    fn push(&mut self, more: &[u8]) {
        self.bytes[self.len..self.len + more.len()].copy_from_slice(more);
        self.len += more.len();
    }

    /// The encoded bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for TinyCode {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_return_is_mov_eax_ret() {
        let code = Arch::X86_64.encode_return_u32(0x1234_5678);
        assert_eq!(code.as_bytes(), [0xB8, 0x78, 0x56, 0x34, 0x12, 0xC3]);
    }

    #[test]
    fn aarch64_return_uses_movk_only_for_high_half() {
        let small = Arch::Aarch64.encode_return_u32(42);
        // mov w0, #42 ; ret
        assert_eq!(
            small.as_bytes(),
            [0x40, 0x05, 0x80, 0x52, 0xC0, 0x03, 0x5F, 0xD6]
        );
        let large = Arch::Aarch64.encode_return_u32(0xBEEF_0001);
        assert_eq!(large.as_bytes().len(), 12);
        // movk w0, #0xBEEF, lsl #16
        assert_eq!(&large.as_bytes()[4..8], &0x72B7_DDE0u32.to_le_bytes());
    }

    #[test]
    fn aarch64_trap_fill_zeroes_partial_word() {
        let mut buf = [0xAAu8; 10];
        Arch::Aarch64.fill_traps(&mut buf);
        assert_eq!(&buf[..4], &AARCH64_BRK.to_le_bytes());
        assert_eq!(&buf[4..8], &AARCH64_BRK.to_le_bytes());
        assert_eq!(&buf[8..], &[0, 0]);
        assert!(Arch::Aarch64.is_trap_filled(&buf));
        buf[9] = 1;
        assert!(!Arch::Aarch64.is_trap_filled(&buf));
    }

    /// Every byte counts, in the first block compared, the last, and across their seams.
    #[test]
    fn one_wrong_byte_anywhere_is_not_trap_filled() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            for len in [0, 1, 3, 4, 255, 256, 257, 511, 512, 515, 1031] {
                let mut buf = vec![0; len];
                arch.fill_traps(&mut buf);
                assert!(arch.is_trap_filled(&buf), "{arch:?} {len}");
                let seams = [255, 256, 257, 511, 512, 1024];
                let spots = [0, len / 2, len.saturating_sub(1)].into_iter().chain(seams);
                for spot in spots.filter(|&spot| spot < len) {
                    let mut wrong = buf.clone();
                    wrong[spot] ^= 0x10;
                    assert!(!arch.is_trap_filled(&wrong), "{arch:?} {len} at {spot}");
                }
            }
        }
    }

    #[test]
    fn x86_trap_fill_is_int3() {
        let mut buf = [0u8; 7];
        Arch::X86_64.fill_traps(&mut buf);
        assert_eq!(buf, [0xCC; 7]);
        assert!(Arch::X86_64.is_trap_filled(&buf));
    }
}
