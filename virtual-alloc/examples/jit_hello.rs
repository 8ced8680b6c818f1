//! Reserve, commit, write a function, make it executable, run it through a function
//! pointer, patch it, run it again, and give everything back: once per W^X strategy this
//! machine offers, then once on the simulated Apple Silicon OS.
//!
//! `cargo run --release -p codeheap-virtual-alloc --example jit_hello`

use codeheap_virtual_alloc::sim::SimOs;
use codeheap_virtual_alloc::{Os, Protection, Result, VirtualAlloc, WriteScope, WxStrategy};

/// Emits `return value` at the region's base, makes it runnable the strategy's way, calls it.
fn emit_and_call<O: Os>(alloc: &VirtualAlloc<O>, base: usize, value: u32) -> Result<u32> {
    let code = alloc.arch().encode_return_u32(value);
    let protect_flips = alloc.region(base).map(|r| r.strategy) == Some(WxStrategy::Protect);
    if protect_flips {
        alloc.protect_expecting(
            base,
            code.as_bytes().len(),
            Protection::ReadWrite,
            Protection::ExecuteRead,
        )?;
    }
    {
        let _write = WriteScope::enter();
        alloc.write(base, code.as_bytes())?;
    }
    if protect_flips {
        alloc.protect_expecting(
            base,
            code.as_bytes().len(),
            Protection::ExecuteRead,
            Protection::ReadWrite,
        )?;
    }
    alloc.flush_instruction_cache(base, code.as_bytes().len())?;
    // SAFETY: `base` holds a complete `extern "C" fn() -> u32`, flushed, and stays committed
    // until the call returns.
    unsafe { alloc.call(base) }
}

fn run<O: Os>(label: &str, alloc: VirtualAlloc<O>) -> Result<()> {
    let region = alloc.reserve_and_commit(alloc.page_size(), Protection::ExecuteRead)?;
    let first = emit_and_call(&alloc, region.base, 42)?;
    let patched = emit_and_call(&alloc, region.base, 0xC0DE)?;
    let stats = alloc.stats();
    alloc.release(region.base)?;
    println!(
        "{label:<22} {:<9} {first:>6} {patched:>8}  {:>5} {:>5}  {:>7}",
        alloc.strategy().name(),
        stats.protect_syscalls,
        stats.protect_skipped,
        !alloc.is_jit_address(region.base),
    );
    assert_eq!((first, patched), (42, 0xC0DE));
    Ok(())
}

fn main() -> Result<()> {
    println!(
        "{:<22} {:<9} {:>6} {:>8}  {:>5} {:>5}  {:>7}",
        "os", "strategy", "first", "patched", "prot", "skip", "gone"
    );
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    for strategy in WxStrategy::ALL {
        use codeheap_virtual_alloc::NativeOs;
        match VirtualAlloc::with_strategy(NativeOs::new(), strategy) {
            Ok(alloc) => run("native", alloc)?,
            Err(err) => println!("{:<22} {:<9} unavailable: {err}", "native", strategy.name()),
        }
    }
    run("simulated Apple arm64", VirtualAlloc::new(SimOs::apple()))?;
    Ok(())
}
