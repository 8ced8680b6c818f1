//! The machine code the workloads emit: a function returning a constant (x86-64
//! `mov eax, imm32; ret`, aarch64 `mov w0, #imm; [movk;] ret`), padded with the
//! architecture's trap (`int3`, or `BRK #0xF000`).

use codeheap::Arch;

/// Bytes of the longest "return a constant" sequence (aarch64 `movz; movk; ret`).
pub const MIN_LEN: usize = 12;

/// A function that returns `value`, then traps up to `len` bytes (at least [`MIN_LEN`]).
pub fn returning(value: u32, len: usize) -> Vec<u8> {
    let mut code = vec![0; len.max(MIN_LEN)];
    Arch::host().fill_traps(&mut code);
    write_returning(&mut code, value);
    code
}

/// Writes "return `value`" over the start of `code`.
pub fn write_returning(code: &mut [u8], value: u32) {
    let sequence = Arch::host().encode_return_u32(value);
    let bytes = sequence.as_bytes();
    code[..bytes.len()].copy_from_slice(bytes);
}

/// Calls the `extern "C" fn() -> u32` at `entry`.
///
/// # Safety
/// `entry` must start a complete function of that signature in executable memory that
/// stays mapped and unchanged until it returns.
pub unsafe fn call(entry: usize) -> u32 {
    // SAFETY: per the caller, `entry` is such a function; function pointers and `usize`
    // have the same size.
    let function: extern "C" fn() -> u32 = unsafe { core::mem::transmute(entry) };
    function()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_returns_then_traps() {
        let code = returning(0x1234_5678, 16);
        let sequence = Arch::host().encode_return_u32(0x1234_5678);
        let len = sequence.as_bytes().len();
        assert_eq!(&code[..len], sequence.as_bytes());
        assert_eq!(code.len(), 16);
        assert!(Arch::host().is_trap_filled(&code[len.next_multiple_of(4)..]));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(&code[..7], [0xB8, 0x78, 0x56, 0x34, 0x12, 0xC3, 0xCC]);
    }
}
