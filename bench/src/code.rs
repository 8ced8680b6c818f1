//! The machine code the workloads emit: `mov eax, imm32; ret`, padded with `int3`.

/// `int3`.
pub const INT3: u8 = 0xCC;

/// A function that returns `value`: `mov eax, value; ret`, then `int3` up to `len` bytes
/// (at least 6).
pub fn returning(value: u32, len: usize) -> Vec<u8> {
    let mut code = vec![INT3; len.max(6)];
    write_returning(&mut code, value);
    code
}

/// Writes `mov eax, value; ret` over the first 6 bytes of `code`.
pub fn write_returning(code: &mut [u8], value: u32) {
    code[0] = 0xB8;
    code[1..5].copy_from_slice(&value.to_le_bytes());
    code[5] = 0xC3;
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
    #[test]
    fn the_function_is_mov_ret_then_traps() {
        let code = super::returning(0x1234_5678, 10);
        assert_eq!(
            code,
            [0xB8, 0x78, 0x56, 0x34, 0x12, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC]
        );
    }
}
