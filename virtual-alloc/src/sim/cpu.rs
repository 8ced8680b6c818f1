//! The simulated CPU: "runs" `extern "C" fn() -> u32` functions made of the few
//! instructions codeheap's tests emit, fetching every instruction through the page table so
//! protections, the thread's mode and icache staleness are checked as hardware would.
//!
//! x86-64: `mov eax, imm32` (`B8 id`), `nop`, `ret`; `int3` traps.
//! AArch64: `movz w0`, `movk w0`, `nop`, `ret`; `brk` and `udf` (an all-zero word) trap.

use super::fault::{Fault, FaultKind};
use super::state::SimState;
use crate::arch::Arch;

/// Instructions a simulated call may run before it is reported as runaway: enough for a
/// megabyte of straight-line aarch64 code.
const MAX_INSTRUCTIONS: usize = 1 << 18;

pub(super) fn call(state: &mut SimState, entry: usize) -> Result<u32, Fault> {
    match state.rules.arch {
        Arch::X86_64 => run_x86_64(state, entry),
        Arch::Aarch64 => run_aarch64(state, entry),
    }
}

fn fault(addr: usize, kind: FaultKind) -> Fault {
    Fault { addr, kind }
}

fn run_x86_64(state: &mut SimState, entry: usize) -> Result<u32, Fault> {
    let mut pc = entry;
    let mut eax = 0u32;
    for _ in 0..MAX_INSTRUCTIONS {
        let opcode = state.fetch(pc, 1)?[0];
        match opcode {
            0xB8 => {
                let imm = state.fetch(pc, 5)?;
                eax = u32::from_le_bytes([imm[1], imm[2], imm[3], imm[4]]);
                pc += 5;
            }
            0x90 => pc += 1,
            0xC3 => return Ok(eax),
            0xCC => return Err(fault(pc, FaultKind::Trap)),
            _ => return Err(fault(pc, FaultKind::IllegalInstruction)),
        }
    }
    Err(fault(pc, FaultKind::Runaway))
}

fn run_aarch64(state: &mut SimState, entry: usize) -> Result<u32, Fault> {
    let mut pc = entry;
    let mut w0 = 0u32;
    for _ in 0..MAX_INSTRUCTIONS {
        if !pc.is_multiple_of(4) {
            return Err(fault(pc, FaultKind::Misaligned));
        }
        let bytes = state.fetch(pc, 4)?;
        let word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let imm16 = (word >> 5) & 0xFFFF;
        let shift = ((word >> 21) & 1) * 16;
        match word {
            // movz w0, #imm16, lsl #shift
            w if w & 0xFFC0_001F == 0x5280_0000 => w0 = imm16 << shift,
            // movk w0, #imm16, lsl #shift
            w if w & 0xFFC0_001F == 0x7280_0000 => {
                w0 = (w0 & !(0xFFFF << shift)) | (imm16 << shift);
            }
            0xD503_201F => {}
            0xD65F_03C0 => return Ok(w0),
            w if w & 0xFFE0_001F == 0xD420_0000 => return Err(fault(pc, FaultKind::Trap)),
            w if w & 0xFFFF_0000 == 0 => return Err(fault(pc, FaultKind::Trap)),
            _ => return Err(fault(pc, FaultKind::IllegalInstruction)),
        }
        pc += 4;
    }
    Err(fault(pc, FaultKind::Runaway))
}
