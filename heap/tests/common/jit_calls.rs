//! Machine code that calls back into Rust, with the frame it builds described for the
//! unwinder: the functions the unwinding tests run.
#![allow(dead_code)]

use codeheap::xdata::dwarf::aarch64;
use codeheap::{Arch, CfaOp, FrameDescription};

/// The frame layouts the tests emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The standard frame-pointer prologue: x86-64 `push rbp; mov rbp, rsp`, aarch64
    /// `stp x29, x30, [sp, #-16]!; mov x29, sp`.
    FramePointer,
    /// No frame pointer: x86-64 `sub rsp, 24`; aarch64 `sub sp, sp, #32` and `x30` saved at
    /// `sp + 16`.
    StackOnly,
}

fn aarch64_load_x16(code: &mut Vec<u8>, value: u64) {
    // movz x16, #part0; movk x16, #part1, lsl 16; ... lsl 32; ... lsl 48
    let ops = [0xD280_0010u32, 0xF2A0_0010, 0xF2C0_0010, 0xF2E0_0010];
    for (shift, op) in ops.into_iter().enumerate() {
        let part = ((value >> (16 * shift)) & 0xFFFF) as u32;
        code.extend_from_slice(&(op | (part << 5)).to_le_bytes());
    }
}

fn words(code: &mut Vec<u8>, words: &[u32]) {
    for word in words {
        code.extend_from_slice(&word.to_le_bytes());
    }
}

/// `extern "C-unwind" fn()` code that calls `callback` (an `extern "C-unwind" fn()`) inside
/// a frame of `layout`, and the description of that frame.
pub fn calls_back(arch: Arch, layout: Layout, callback: usize) -> (Vec<u8>, FrameDescription) {
    let mut code = Vec::new();
    let frame = match (arch, layout) {
        (Arch::X86_64, Layout::FramePointer) => {
            code.extend_from_slice(&[0x55, 0x48, 0x89, 0xE5]); // push rbp; mov rbp, rsp
            code.extend_from_slice(&[0x48, 0xB8]); // movabs rax, callback
            code.extend_from_slice(&(callback as u64).to_le_bytes());
            code.extend_from_slice(&[0xFF, 0xD0, 0x5D, 0xC3]); // call rax; pop rbp; ret
            FrameDescription::standard(arch)
        }
        (Arch::X86_64, Layout::StackOnly) => {
            code.extend_from_slice(&[0x48, 0x83, 0xEC, 0x18]); // sub rsp, 24
            code.extend_from_slice(&[0x48, 0xB8]);
            code.extend_from_slice(&(callback as u64).to_le_bytes());
            code.extend_from_slice(&[0xFF, 0xD0]); // call rax
            code.extend_from_slice(&[0x48, 0x83, 0xC4, 0x18, 0xC3]); // add rsp, 24; ret
            FrameDescription::new(arch).row(4, CfaOp::DefCfaOffset(32))
        }
        (Arch::Aarch64, Layout::FramePointer) => {
            words(&mut code, &[0xA9BF_7BFD, 0x9100_03FD]); // stp x29, x30, [sp, #-16]!; mov x29, sp
            aarch64_load_x16(&mut code, callback as u64);
            words(&mut code, &[0xD63F_0200, 0xA8C1_7BFD, 0xD65F_03C0]); // blr x16; ldp; ret
            FrameDescription::standard(arch)
        }
        (Arch::Aarch64, Layout::StackOnly) => {
            words(&mut code, &[0xD100_83FF, 0xF900_0BFE]); // sub sp, sp, #32; str x30, [sp, #16]
            aarch64_load_x16(&mut code, callback as u64);
            // blr x16; ldr x30, [sp, #16]; add sp, sp, #32; ret
            words(
                &mut code,
                &[0xD63F_0200, 0xF940_0BFE, 0x9100_83FF, 0xD65F_03C0],
            );
            FrameDescription::new(arch)
                .row(4, CfaOp::DefCfaOffset(32))
                .row(
                    8,
                    CfaOp::Offset {
                        register: aarch64::LR,
                        offset: -16,
                    },
                )
        }
    };
    (code, frame)
}
