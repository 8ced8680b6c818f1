//! Instruction-cache maintenance after writing code.
//!
//! x86-64 keeps instruction fetch coherent with stores: nothing to do beyond stopping the
//! compiler from sinking the stores past the call. AArch64 does not: the written lines must
//! be cleaned to the point of unification (`dc cvau`), the stale instruction lines
//! invalidated (`ic ivau`), each followed by `dsb ish`, then `isb`. `CTR_EL0` gives the
//! line sizes (the kernel reports the smallest across big.LITTLE cores) and says when a step
//! is unnecessary (`IDC`, `DIC`). macOS does all of that in `sys_icache_invalidate`.
//!
//! Other threads about to run the new code also need a context-synchronising event before
//! they run it: `Os::sync_cores` (`membarrier` on Linux) gives every thread one at once.

#[cfg(any(target_arch = "x86_64", miri))]
#[inline]
pub(crate) unsafe fn flush(_addr: usize, _len: usize) {
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

#[cfg(all(target_arch = "aarch64", target_os = "macos", not(miri)))]
pub(crate) unsafe fn flush(addr: usize, len: usize) {
    unsafe extern "C" {
        fn sys_icache_invalidate(start: *mut core::ffi::c_void, len: usize);
    }
    // SAFETY: the caller guarantees the range is mapped; the call only maintains caches.
    unsafe { sys_icache_invalidate(addr as *mut core::ffi::c_void, len) };
}

#[cfg(all(target_arch = "aarch64", not(target_os = "macos"), not(miri)))]
pub(crate) unsafe fn flush(addr: usize, len: usize) {
    use core::arch::asm;

    let ctr: u64;
    // SAFETY: Linux lets user space read CTR_EL0 (or emulates the read).
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let dline = 4usize << ((ctr >> 16) & 0xF);
    let iline = 4usize << (ctr & 0xF);
    let idc = (ctr >> 28) & 1 == 1;
    let dic = (ctr >> 29) & 1 == 1;
    let end = addr.saturating_add(len);

    if idc {
        // SAFETY: a barrier has no memory-safety preconditions.
        unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
    } else {
        let mut line = addr & !(dline - 1);
        while line < end {
            // SAFETY: the caller guarantees the range is mapped and readable.
            unsafe { asm!("dc cvau, {}", in(reg) line, options(nostack, preserves_flags)) };
            line += dline;
        }
        // SAFETY: a barrier has no memory-safety preconditions.
        unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    }
    if !dic {
        let mut line = addr & !(iline - 1);
        while line < end {
            // SAFETY: the caller guarantees the range is mapped and readable.
            unsafe { asm!("ic ivau, {}", in(reg) line, options(nostack, preserves_flags)) };
            line += iline;
        }
        // SAFETY: a barrier has no memory-safety preconditions.
        unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    }
    // SAFETY: a barrier has no memory-safety preconditions.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}
