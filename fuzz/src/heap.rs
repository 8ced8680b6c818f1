//! Heap operation sequences on the simulated OS: allocations of every size class, write
//! sessions (finished, abandoned, out of bounds, with other operations nested inside),
//! calls, frees by handle and by address (good, interior, foreign, double), stale handles,
//! shrinks (by handle, and truncated sessions), `decommit_all`, and system calls failed on
//! purpose. After every operation
//! `Heap::check_invariants` must pass, the thread must be back in execute mode, every live
//! block must be found at its address, and every finalized block must still return the
//! value written into it.

use arbitrary::Arbitrary;
use codeheap::vm::Error as VmError;
use codeheap::vm::sim::SimRules;
use codeheap::{
    Arch, Block, CodeRangeConfig, CodeWriter, Error, FrameDescription, Heap, HeapConfig,
    PageAllocatorConfig, SimOs, SizeClasses, ThreadMode, WxStrategy, current_mode,
};

use crate::ensure;

/// Which simulated machine, strategy and page geometry the heap runs on.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Machine {
    /// macOS on Apple Silicon: MAP_JIT, 16 KiB pages, icache flushes required.
    AppleMapJit,
    /// Linux x86-64, dual-mapped memfd.
    LinuxDualMap,
    /// Linux x86-64, `mprotect` flips.
    LinuxProtect,
    /// Linux x86-64, RWX pages.
    LinuxRwx,
    /// Linux aarch64, dual-mapped memfd, icache flushes required.
    LinuxAarch64DualMap,
}

/// A structured fuzz input: the machine, page-allocator knobs, and the operations.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub machine: Machine,
    /// Pages per segment: 2 + this % 31 (so 2..=32).
    pub segment_pages: u8,
    /// Free pages the page allocator keeps: this % 4.
    pub max_free_pages: u8,
    /// `SizeClasses::Chunks` instead of powers of two.
    pub chunk_classes: bool,
    /// Every freed block straight back to its page (`keep_freed_blocks: false`).
    pub keep_nothing: bool,
    /// Every segment carved from a code range of [`CODE_RANGE`] bytes, which fills up:
    /// an allocation needing a segment it cannot fit fails with `CodeRangeFull`.
    pub code_range: bool,
    pub ops: Vec<Op>,
}

/// The code range of inputs that ask for one: two segments of Apple's 16 KiB pages.
pub const CODE_RANGE: usize = 1 << 20;

/// What may happen inside a write session, besides writing.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Nested {
    /// Allocate another block (it is kept).
    Alloc { size: u16 },
    /// Free another live block.
    Free { which: u8 },
    /// Ask for an entry point: refused, the thread is in write mode.
    EntryPoint { which: u8 },
    /// Free the block being written by address: `BlockBusy`.
    FreeSelf,
    /// `decommit_all` while a block is written: `BlockBusy`.
    DecommitAll,
}

/// One heap operation. `which` picks a live block (modulo their number).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// A small block: 1 + size % page bytes.
    Alloc { size: u16 },
    /// A large block of 2 + pages % 3 pages, less `shave` bytes.
    AllocLarge { pages: u8, shave: u8 },
    /// Writes `return value` and finalizes.
    Write { which: u8, value: u32 },
    /// `emit`: a block of 1 + size % (2 pages) bytes written with `return value` in one
    /// call; with `fail` the generator fails after writing, and no block may remain. With
    /// `unwind`, `emit_with_unwind` and the standard frame: the entry must be registered.
    Emit {
        size: u16,
        value: u32,
        fail: bool,
        unwind: bool,
    },
    /// `emit_code` of a finished buffer of 1 + size % (2 pages) bytes (at least the
    /// function's): `return value` at its start, traps after it.
    EmitCode { size: u16, value: u32 },
    /// Writes some bytes, then the closure fails: the session is abandoned.
    AbandonedWrite { which: u8, len: u8 },
    /// Writes past the block's end: `OutOfBounds`, abandoned.
    WritePastEnd { which: u8 },
    /// Writes `return value` with another operation inside the session.
    WriteWith {
        which: u8,
        value: u32,
        nested: Nested,
    },
    /// Calls a block (finalized ones return their value; others are refused).
    Call { which: u8 },
    /// Frees through the handle.
    Free { which: u8 },
    /// Frees by address; a handle kept for it becomes stale.
    FreeAddress { which: u8 },
    /// Frees an address inside a block (`InteriorAddress`), changing nothing.
    FreeInterior { which: u8, offset: u16 },
    /// Frees an address no block starts at: `offset` bytes from a live block (anywhere if
    /// there is none).
    FreeForeign { near: u8, offset: i32 },
    /// `decommit_all`.
    DecommitAll,
    /// `trim`: what is kept without a live block goes back; live blocks keep running.
    Trim,
    /// Fails the next call of one of the system calls that can fail on a real machine
    /// (`mmap`, `mprotect`, `madvise`, `memfd_create`, `ftruncate`, `fallocate`; not
    /// `munmap` or `close` of our own mappings and descriptors) with `ENOMEM` or `EPERM`,
    /// replacing any failure planned before.
    FailSyscall { call: u8, enomem: bool },
    /// Drops every planned failure not yet triggered.
    ClearFailures,
    /// `shrink` to 1 + to % size bytes (0 and one byte more when `to` is 0 or `u16::MAX`:
    /// refused), never cutting a finalized block's function off.
    Shrink { which: u8, to: u16 },
    /// `emit` of 1 + size % (2 pages) bytes holding `return value`, truncated in its
    /// session to 1 + len % size bytes (at least the function's); with `unwind`,
    /// `emit_with_unwind` and the standard frame.
    EmitTruncated {
        size: u16,
        len: u16,
        value: u32,
        unwind: bool,
    },
    /// `emit_code_with_unwind` of a buffer as `EmitCode`'s, with the standard frame: the
    /// entry must be registered for the whole function (a function too short for the
    /// frame's rows is refused, leaving nothing).
    EmitCodeWithUnwind { size: u16, value: u32 },
    /// `patch`: with `len` 0, of a finalized block's value (its low byte on x86-64, its
    /// `movz` on aarch64), after which calls must return the new one; otherwise of
    /// `len % 9` bytes `offset` bytes past its function (anywhere in a block not
    /// finalized), refused unless one aligned store of a whole word within its size can make
    /// it. With `len` 255, of a stale handle, if there is one: `StaleBlock`. With
    /// `by_address`, through `patch_address` when the offset lies within the block's size
    /// (the same checks, the block found from the address).
    Patch {
        which: u8,
        value: u16,
        offset: u8,
        len: u8,
        by_address: bool,
    },
}

/// A block the driver holds.
#[derive(Debug)]
struct Live {
    addr: usize,
    /// `None` once freed by address behind the handle's back (then it is in `stale`).
    handle: Option<Block>,
    /// What its code returns, if it is finalized.
    value: Option<u32>,
    /// Parked by `decommit_all`: it can only be freed.
    decommitted: bool,
    /// A free of it was refused: it may still be finalized, or scrubbed and not.
    uncertain: bool,
}

impl Live {
    /// A block just handed out: finalized with `value`, or not finalized.
    fn new(block: Block, value: Option<u32>) -> Live {
        Live {
            addr: block.addr(),
            handle: Some(block),
            value,
            decommitted: false,
            uncertain: false,
        }
    }
}

struct Driver {
    heap: Heap<SimOs>,
    live: Vec<Live>,
    /// Handles of blocks freed by address.
    stale: Vec<Block>,
    /// Whether a system call failure is planned: errors are then allowed.
    failures_planned: bool,
    /// This step's operations go through the heap's exclusive view: every other step, so
    /// both ways in are fuzzed, each on blocks the other made.
    exclusive: bool,
}

/// `$driver.heap.$method(..)`, through `Heap::exclusive` on the steps that ask for it.
macro_rules! on_heap {
    ($driver:expr, $method:ident($($arg:expr),*)) => {
        if $driver.exclusive {
            $driver.heap.exclusive().$method($($arg),*)
        } else {
            $driver.heap.$method($($arg),*)
        }
    };
}

/// Whether `err` is an allocation refused because the heap's code range is full: allowed,
/// in inputs that ask for a range.
fn range_full(err: &Error) -> bool {
    matches!(err, Error::Vm(VmError::CodeRangeFull { .. }))
}

/// Runs one input; `Err` describes the first violation.
pub fn run(input: &Input) -> Result<(), String> {
    let mut driver = Driver::new(input)?;
    for (step, op) in input.ops.iter().enumerate() {
        driver.exclusive = step % 2 == 1;
        driver
            .step(*op)
            .and_then(|()| driver.check())
            .map_err(|err| format!("step {step} ({op:?}): {err}"))?;
    }
    driver.finish()
}

/// Runs one input with the first chunk of a live small block marked free behind the heap's
/// back just before the last operation: the check after it must fail. For showing that the
/// fuzz target catches corruption; `Ok(false)` if the input never had a small block to
/// corrupt.
pub fn run_with_corruption(input: &Input) -> Result<bool, String> {
    let mut driver = Driver::new(input)?;
    let last = input.ops.len().saturating_sub(1);
    for (step, op) in input.ops.iter().enumerate() {
        if step == last {
            let target = driver.live.iter().find(|live| {
                live.handle
                    .as_ref()
                    .is_some_and(|b| b.capacity() <= driver.heap.page_size())
            });
            let Some(target) = target else {
                return Ok(false);
            };
            assert!(driver.heap.corrupt_chunk_bitmap_for_test(target.addr));
        }
        driver.exclusive = step % 2 == 1;
        driver.step(*op).and_then(|()| driver.check())?;
    }
    Ok(true)
}

impl Driver {
    fn new(input: &Input) -> Result<Driver, String> {
        let (rules, strategy) = match input.machine {
            Machine::AppleMapJit => (SimRules::apple(), WxStrategy::MapJit),
            Machine::LinuxDualMap => (SimRules::linux(), WxStrategy::DualMap),
            Machine::LinuxProtect => (SimRules::linux(), WxStrategy::Protect),
            Machine::LinuxRwx => (SimRules::linux(), WxStrategy::Rwx),
            Machine::LinuxAarch64DualMap => (SimRules::linux_aarch64(), WxStrategy::DualMap),
        };
        let config = HeapConfig {
            strategy: Some(strategy),
            pages: PageAllocatorConfig {
                segment_pages: 2 + usize::from(input.segment_pages) % 31,
                secondary_pages: 1,
                max_free_pages: usize::from(input.max_free_pages) % 4,
                ..PageAllocatorConfig::default()
            },
            size_classes: if input.chunk_classes {
                SizeClasses::Chunks
            } else {
                SizeClasses::PowerOfTwo
            },
            keep_freed_blocks: !input.keep_nothing,
            code_range: input.code_range.then_some(CodeRangeConfig::new(CODE_RANGE)),
        };
        let heap = Heap::with_config(SimOs::new(rules), config)
            .map_err(|err| format!("heap setup: {err}"))?;
        Ok(Driver {
            heap,
            live: Vec::new(),
            stale: Vec::new(),
            failures_planned: false,
            exclusive: false,
        })
    }

    fn pick(&self, which: u8) -> Option<usize> {
        (!self.live.is_empty()).then(|| usize::from(which) % self.live.len())
    }

    /// An error is fine only while a system call failure is planned, or, in a code range,
    /// when the range is full.
    fn allowed(&self, what: &str, err: Error) -> Result<(), String> {
        ensure(self.failures_planned || range_full(&err), || {
            format!("{what} failed: {err}")
        })
    }

    fn step(&mut self, op: Op) -> Result<(), String> {
        let page = self.heap.page_size();
        match op {
            Op::Alloc { size } => self.alloc(1 + usize::from(size) % page),
            Op::AllocLarge { pages, shave } => {
                let pages = 2 + usize::from(pages) % 3;
                self.alloc(pages * page - usize::from(shave))
            }
            Op::Write { which, value } => self.write(which, value, None),
            Op::Emit {
                size,
                value,
                fail,
                unwind,
            } => self.emit(1 + usize::from(size) % (2 * page), value, fail, unwind),
            Op::EmitCode { size, value } => {
                self.emit_code(1 + usize::from(size) % (2 * page), value, false)
            }
            Op::EmitCodeWithUnwind { size, value } => {
                self.emit_code(1 + usize::from(size) % (2 * page), value, true)
            }
            Op::WriteWith {
                which,
                value,
                nested,
            } => self.write(which, value, Some(nested)),
            Op::AbandonedWrite { which, len } => self.abandoned_write(which, len),
            Op::WritePastEnd { which } => {
                let Some(i) = self.pick(which) else {
                    return Ok(());
                };
                let Some(mut handle) = self.live[i].handle.take() else {
                    return Ok(());
                };
                let size = handle.size();
                let result = self.heap.write(&mut handle, |w| w.write(size, &[0x90]));
                self.live[i].handle = Some(handle);
                match result {
                    Err(Error::OutOfBounds { .. }) => {
                        self.live[i].value = None;
                        self.live[i].uncertain = false;
                    }
                    Err(Error::Decommitted { .. }) if self.live[i].decommitted => {}
                    Err(_) if self.failures_planned => self.live[i].uncertain = true,
                    other => return Err(format!("a write past the end gave {other:?}")),
                }
                Ok(())
            }
            Op::Call { which } => self.call(which),
            Op::Patch {
                which,
                value,
                offset,
                len,
                by_address,
            } => self.patch(which, value, offset, len, by_address),
            Op::Shrink { which, to } => self.shrink(which, to),
            Op::EmitTruncated {
                size,
                len,
                value,
                unwind,
            } => {
                let size = 1 + usize::from(size) % (2 * page);
                self.emit_truncated(size, 1 + usize::from(len) % size, value, unwind)
            }
            Op::Free { which } => {
                let Some(i) = self.pick(which) else {
                    return Ok(());
                };
                let Some(handle) = self.live[i].handle.take() else {
                    return Ok(());
                };
                let addr = handle.addr();
                match on_heap!(self, free(handle)) {
                    Ok(()) => {
                        self.live.remove(i);
                        ensure(self.heap.find(addr).is_none(), || {
                            format!("freed block {addr:#x} is still found")
                        })
                    }
                    // The handle is gone; the block stays (scrubbed: a free that got as far
                    // as filling it with traps leaves it unfinalized) and is freed by address
                    // later.
                    Err(err) => {
                        self.live[i].uncertain = true;
                        self.allowed("free", err)
                    }
                }
            }
            Op::FreeAddress { which } => {
                let Some(i) = self.pick(which) else {
                    return Ok(());
                };
                let addr = self.live[i].addr;
                match on_heap!(self, free_address(addr)) {
                    Ok(()) => {
                        let live = self.live.remove(i);
                        self.stale.extend(live.handle);
                        // A second free of the same address is refused (`NotFromHeap` if
                        // its page went back).
                        let again = self.heap.free_address(addr);
                        let refused = matches!(
                            again,
                            Err(Error::NotAllocated { .. } | Error::NotFromHeap { .. })
                        );
                        ensure(refused, || {
                            format!("double free of {addr:#x} gave {again:?}")
                        })
                    }
                    Err(err) => {
                        self.live[i].uncertain = true;
                        self.allowed("free by address", err)
                    }
                }
            }
            Op::FreeInterior { which, offset } => {
                let Some(i) = self.pick(which) else {
                    return Ok(());
                };
                let addr = self.live[i].addr;
                let capacity = self.heap.find(addr).map_or(1, |info| info.capacity);
                let inside = addr + 1 + usize::from(offset) % (capacity - 1).max(1);
                if inside >= addr + capacity {
                    return Ok(());
                }
                let result = self.heap.free_address(inside);
                ensure(
                    matches!(result, Err(Error::InteriorAddress { block, .. }) if block == addr),
                    || format!("freeing {inside:#x} inside {addr:#x} gave {result:?}"),
                )
            }
            Op::FreeForeign { near, offset } => {
                let from = self.pick(near).map_or(0, |i| self.live[i].addr);
                let addr = from.wrapping_add(offset as isize as usize);
                if self.live.iter().any(|live| live.addr == addr) {
                    return Ok(());
                }
                let result = self.heap.free_address(addr);
                ensure(result.is_err(), || {
                    format!("freeing {addr:#x}, where no block starts, succeeded")
                })
            }
            Op::Trim => {
                let committed = self.heap.stats().committed_bytes;
                match on_heap!(self, trim()) {
                    Ok(bytes) => {
                        let stats = self.heap.stats();
                        let below = self.heap.page_allocator().stats();
                        let kept = stats.kept_blocks + stats.kept_large_blocks;
                        ensure(
                            kept == 0 && stats.spare_pages == 0 && below.free_bytes == 0,
                            || format!("after trim: {stats:?}, {below:?}"),
                        )?;
                        ensure(
                            committed.checked_sub(stats.committed_bytes) == Some(bytes),
                            || {
                                format!(
                                    "trim gave back {bytes} bytes, committed went {committed} -> {}",
                                    stats.committed_bytes
                                )
                            },
                        )
                    }
                    Err(err) => self.allowed("trim", err),
                }
            }
            Op::DecommitAll => match self.heap.decommit_all() {
                Ok(()) => {
                    let kept = self.heap.stats().kept_large_blocks;
                    ensure(kept == 0, || {
                        format!("{kept} large blocks still kept after decommit_all")
                    })?;
                    for live in &mut self.live {
                        live.decommitted = true;
                        live.value = None;
                    }
                    // Stale handles stay refused.
                    for stale in &self.stale {
                        let refused = self.heap.entry_point(stale);
                        ensure(matches!(refused, Err(Error::StaleBlock { .. })), || {
                            format!("a stale handle's entry point gave {refused:?}")
                        })?;
                    }
                    Ok(())
                }
                Err(err) => {
                    self.allowed("decommit_all", err)?;
                    // The blocks decommitted before the failure stay decommitted.
                    for live in &mut self.live {
                        let parked = live.handle.as_ref().map(|h| self.heap.entry_point(h));
                        if let Some(Err(Error::Decommitted { .. })) = parked {
                            live.decommitted = true;
                            live.value = None;
                        }
                    }
                    Ok(())
                }
            },
            Op::FailSyscall { call, enomem } => {
                // One planned failure at a time: a failure of the clean-up after a failure
                // is out of scope.
                let errno = if enomem { libc::ENOMEM } else { libc::EPERM };
                let os = self.heap.vm().os();
                os.clear_failures();
                os.fail_next(crate::failing_call(call), errno);
                self.failures_planned = true;
                Ok(())
            }
            Op::ClearFailures => {
                self.heap.vm().os().clear_failures();
                self.failures_planned = false;
                Ok(())
            }
        }
    }

    fn shrink(&mut self, which: u8, to: u16) -> Result<(), String> {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let arch = self.heap.arch();
        let live = &mut self.live[i];
        let Some(handle) = live.handle.as_mut() else {
            return Ok(());
        };
        let size = handle.size();
        // A finalized block keeps its whole function.
        let shortest = live
            .value
            .map_or(1, |value| arch.encode_return_u32(value).as_bytes().len());
        let new_size = match to {
            0 => 0,
            u16::MAX => size + 1,
            _ => shortest.max(1 + usize::from(to) % size),
        };
        let capacity = handle.capacity();
        let entry = self.heap.unwind_entry(handle).map(|entry| entry.len);
        let result = on_heap!(self, shrink(handle, new_size));
        let (now, now_capacity) = (handle.size(), handle.capacity());
        let planned = self.failures_planned;
        match result {
            Ok(()) => {
                ensure(now == new_size && now_capacity <= capacity, || {
                    format!("shrink({new_size}) of a {size}-byte block gave {handle:?}")
                })?;
                let found = self.heap.find(live.addr).map(|info| info.size);
                ensure(found == Some(new_size), || {
                    format!("a block shrunk to {new_size} is found as {found:?}")
                })?;
                // A registered entry now describes the shorter function.
                let now_entry = self.heap.unwind_entry(handle).map(|entry| entry.len);
                ensure(now_entry == entry.map(|_| new_size), || {
                    format!("shrunk to {new_size}, its entry of {entry:?} is {now_entry:?}")
                })
            }
            Err(Error::ZeroSize) if new_size == 0 => Ok(()),
            Err(Error::CannotGrow { .. }) if new_size > size => Ok(()),
            Err(Error::Decommitted { .. }) if live.decommitted => Ok(()),
            // The frame's rows reach past the new size: refused, nothing changed.
            Err(Error::Unwind(_)) if entry.is_some() => ensure(
                now == size && self.heap.unwind_entry(handle).map(|e| e.len) == entry,
                || format!("a shrink refused for its frame left {handle:?}"),
            ),
            // Refused by the OS: the block keeps its size (its bytes past the new size may
            // be traps already, none of its function's).
            Err(err) if planned => ensure(now == size, || {
                format!("a refused shrink ({err}) left {handle:?}")
            }),
            Err(err) => Err(format!("shrink({new_size}) of a {size}-byte block: {err}")),
        }
    }

    fn emit_truncated(
        &mut self,
        size: usize,
        len: usize,
        value: u32,
        unwind: bool,
    ) -> Result<(), String> {
        if self.failures_planned {
            // As for `emit`: a block whose discarding was refused has no handle to free.
            return Ok(());
        }
        let code = self.heap.arch().encode_return_u32(value);
        let size = size.max(code.as_bytes().len());
        let len = len.max(code.as_bytes().len());
        let generate = |w: &mut CodeWriter<'_, SimOs>| {
            w.write(0, code.as_bytes())?;
            w.truncate(len)
        };
        match self.emit_maybe_unwind(size, unwind, generate) {
            Ok((block, ())) => {
                self.keep_emitted(block, len, value, unwind, &format!("emit({size}) to {len}"))
            }
            // The standard frame's rows lie past a function of a few bytes.
            Err(Error::Unwind(_)) if unwind => Ok(()),
            Err(err) if range_full(&err) => Ok(()),
            Err(err) => Err(format!("emit({size}) truncated to {len} failed: {err}")),
        }
    }

    fn alloc(&mut self, size: usize) -> Result<(), String> {
        match on_heap!(self, alloc(size)) {
            Ok(block) => {
                ensure(block.size() == size && block.capacity() >= size, || {
                    format!("alloc({size}) gave {block:?}")
                })?;
                self.live.push(Live::new(block, None));
                Ok(())
            }
            Err(err) => self.allowed("alloc", err),
        }
    }

    fn emit(&mut self, size: usize, value: u32, fail: bool, unwind: bool) -> Result<(), String> {
        if self.failures_planned {
            // A refused system call can keep the discarded block from being freed, and
            // `emit` gives no handle for it back: a leak the driver could not account for.
            return Ok(());
        }
        let code = self.heap.arch().encode_return_u32(value);
        let fits = code.as_bytes().len() <= size;
        let generate = |w: &mut CodeWriter<'_, SimOs>| {
            w.write(0, code.as_bytes())?;
            if fail { Err(Error::ZeroSize) } else { Ok(()) }
        };
        match self.emit_maybe_unwind(size, unwind, generate) {
            Ok((block, ())) => {
                ensure(fits && !fail && block.size() == size, || {
                    format!(
                        "emit({size}) of {} bytes gave {block:?}",
                        code.as_bytes().len()
                    )
                })?;
                let registered = self.heap.unwind_entry(&block);
                ensure(registered.is_some() == unwind, || {
                    format!("emit({size}, unwind: {unwind}) registered {registered:?}")
                })?;
                self.live.push(Live::new(block, Some(value)));
                Ok(())
            }
            Err(Error::OutOfBounds { .. }) if !fits => Ok(()),
            Err(Error::ZeroSize) if fail => Ok(()),
            // The standard frame's rows lie past a function of a few bytes.
            Err(Error::Unwind(_)) if unwind => Ok(()),
            Err(err) if range_full(&err) => Ok(()),
            Err(err) => Err(format!("emit({size}) failed: {err}")),
        }
    }

    fn emit_code(&mut self, size: usize, value: u32, unwind: bool) -> Result<(), String> {
        if self.failures_planned {
            // As for `emit`: a block whose discarding was refused has no handle to free.
            return Ok(());
        }
        let arch = self.heap.arch();
        let code = arch.encode_return_u32(value);
        // At least the function: a finalized block must be one that can be called.
        let size = size.max(code.as_bytes().len());
        let mut buffer = vec![0; size];
        arch.fill_traps(&mut buffer);
        buffer[..code.as_bytes().len()].copy_from_slice(code.as_bytes());
        let result = if unwind {
            let frame = FrameDescription::standard(arch);
            on_heap!(self, emit_code_with_unwind(&buffer, frame))
        } else {
            on_heap!(self, emit_code(&buffer))
        };
        match result {
            Ok(block) => {
                self.keep_emitted(block, size, value, unwind, &format!("emit_code({size})"))
            }
            Err(err) if range_full(&err) => Ok(()),
            // The standard frame's rows lie past a function of a few bytes.
            Err(Error::Unwind(_)) if unwind => Ok(()),
            Err(err) => Err(format!("emit_code({size}) failed: {err}")),
        }
    }

    /// `emit`, or `emit_with_unwind` with the standard frame.
    fn emit_maybe_unwind(
        &mut self,
        size: usize,
        unwind: bool,
        generate: impl FnOnce(&mut CodeWriter<'_, SimOs>) -> Result<(), Error>,
    ) -> Result<(Block, ()), Error> {
        if unwind {
            let frame = FrameDescription::standard(self.heap.arch());
            on_heap!(self, emit_with_unwind(size, frame, generate))
        } else {
            on_heap!(self, emit(size, generate))
        }
    }

    /// Checks a function block `what` made: `len` bytes, its unwind entry registered for
    /// all of them if `unwind` (none if not); then holds it, returning `value`.
    fn keep_emitted(
        &mut self,
        block: Block,
        len: usize,
        value: u32,
        unwind: bool,
        what: &str,
    ) -> Result<(), String> {
        ensure(block.size() == len, || format!("{what} gave {block:?}"))?;
        let registered = self.heap.unwind_entry(&block).map(|entry| entry.len);
        ensure(registered == unwind.then_some(len), || {
            format!("{what}, unwind: {unwind}, registered {registered:?}")
        })?;
        self.live.push(Live::new(block, Some(value)));
        Ok(())
    }

    fn write(&mut self, which: u8, value: u32, nested: Option<Nested>) -> Result<(), String> {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let Some(mut handle) = self.live[i].handle.take() else {
            return Ok(());
        };
        let code = self.heap.arch().encode_return_u32(value);
        let fits = code.as_bytes().len() <= handle.size();
        let addr = handle.addr();
        let heap = &self.heap;
        let mut nested_outcome: Result<Option<Block>, String> = Ok(None);
        // Blocks other than the one written, for nested operations.
        let others: Vec<(usize, bool)> = self
            .live
            .iter()
            .filter(|live| live.addr != addr)
            .map(|live| (live.addr, live.value.is_some()))
            .collect();
        let mut nested_freed = None;
        let result = heap.write(&mut handle, |w| {
            if let Some(nested) = nested {
                nested_outcome = nested_op(heap, addr, &others, nested, &mut nested_freed);
            }
            w.write(0, code.as_bytes())
        });
        self.live[i].handle = Some(handle);
        let new_block = nested_outcome.or_else(|err| {
            if self.failures_planned {
                Ok(None)
            } else {
                Err(err)
            }
        })?;
        if let Some((freed, done)) = nested_freed {
            let j = self
                .live
                .iter()
                .position(|l| l.addr == freed)
                .expect("live");
            if done {
                let live = self.live.remove(j);
                self.stale.extend(live.handle);
            } else {
                self.live[j].uncertain = true;
            }
        }
        let i = self.live.iter().position(|l| l.addr == addr).expect("live");
        if let Some(block) = new_block {
            self.live.push(Live::new(block, None));
        }
        let live = &mut self.live[i];
        match result {
            Ok(()) => {
                ensure(fits && !live.decommitted, || {
                    format!("writing {value} into {addr:#x} should have failed")
                })?;
                live.value = Some(value);
                live.uncertain = false;
                Ok(())
            }
            Err(Error::OutOfBounds { .. }) if !fits => {
                live.value = None;
                live.uncertain = false;
                Ok(())
            }
            Err(Error::Decommitted { .. }) if live.decommitted => Ok(()),
            // Refused before the session opened (nothing changed) or after (unfinalized).
            Err(err) => {
                live.uncertain = true;
                self.allowed("write", err)
            }
        }
    }

    fn abandoned_write(&mut self, which: u8, len: u8) -> Result<(), String> {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let Some(mut handle) = self.live[i].handle.take() else {
            return Ok(());
        };
        let len = usize::from(len).min(handle.size());
        let result = self.heap.write(&mut handle, |w| {
            w.fill(0, len, &[0x90])?;
            Err::<(), _>(Error::ZeroSize)
        });
        self.live[i].handle = Some(handle);
        let planned = self.failures_planned;
        let live = &mut self.live[i];
        match result {
            Err(Error::ZeroSize) => {
                live.value = None;
                live.uncertain = false;
                Ok(())
            }
            Err(Error::Decommitted { .. }) if live.decommitted => Ok(()),
            Err(_) if planned => {
                live.uncertain = true;
                Ok(())
            }
            other => Err(format!("an abandoned write gave {other:?}")),
        }
    }

    fn patch(
        &mut self,
        which: u8,
        value: u16,
        offset: u8,
        len: u8,
        by_address: bool,
    ) -> Result<(), String> {
        if len == u8::MAX {
            let Some(stale) = self.stale.get(usize::from(which) % self.stale.len().max(1)) else {
                return Ok(());
            };
            let refused = self.heap.patch(stale, 0, &[0; 4]);
            return ensure(matches!(refused, Err(Error::StaleBlock { .. })), || {
                format!("patching a stale handle gave {refused:?}")
            });
        }
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let arch = self.heap.arch();
        let live = &mut self.live[i];
        let Some(handle) = live.handle.as_ref() else {
            return Ok(());
        };
        if live.uncertain {
            // Finalized or not, scrubbed or not: nothing to expect.
            return Ok(());
        }
        let (at, bytes, new_value) = match (len, live.value) {
            (0, Some(old)) => {
                let (at, bytes, new) = value_patch(arch, old, value);
                (at, bytes, Some(new))
            }
            _ => {
                let function = live
                    .value
                    .map_or(0, |v| arch.encode_return_u32(v).as_bytes().len());
                let len = usize::from(len) % 9;
                (function + usize::from(offset), vec![0xA5; len], None)
            }
        };
        let len = bytes.len();
        let one_store = [1, 2, 4, 8].contains(&len)
            && len >= arch.instruction_alignment()
            && (live.addr + at).is_multiple_of(len);
        let size = handle.size();
        let result = match by_address && at < size {
            true => on_heap!(self, patch_address(live.addr + at, &bytes)),
            false => on_heap!(self, patch(handle, at, &bytes)),
        };
        let expected_refusal = |err: &Error| match err {
            Error::PatchNotAtomic { offset, len: l } => !one_store && (*offset, *l) == (at, len),
            Error::Decommitted { .. } => one_store && live.decommitted,
            Error::NotFinalized { .. } => one_store && !live.decommitted && live.value.is_none(),
            Error::OutOfBounds { .. } => {
                one_store && live.value.is_some() && !live.decommitted && at + len > size
            }
            _ => false,
        };
        match result {
            Ok(()) => {
                ensure(
                    one_store && live.value.is_some() && !live.decommitted && at + len <= size,
                    || format!("patching {len} bytes at {at} of {live:?} should have failed"),
                )?;
                live.value = new_value.or(live.value);
                Ok(())
            }
            Err(err) if expected_refusal(&err) => Ok(()),
            // Refused by the OS (under `Protect`, opening or closing the pages): the value
            // may be the old or the new.
            Err(_) if self.failures_planned => {
                live.uncertain = true;
                Ok(())
            }
            Err(err) => Err(format!("patching {len} bytes at {at} of {live:?}: {err}")),
        }
    }

    fn call(&mut self, which: u8) -> Result<(), String> {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let live = &self.live[i];
        let Some(handle) = &live.handle else {
            return Ok(());
        };
        // SAFETY: on the simulator a call decodes the block's bytes in its own memory; a
        // block not finalized is refused before anything runs.
        let result = unsafe { self.heap.call(handle) };
        if live.uncertain {
            let either = matches!(result, Ok(_) | Err(Error::NotFinalized { .. }));
            return ensure(either || live.decommitted, || {
                format!(
                    "calling {:#x} after a refused free gave {result:?}",
                    live.addr
                )
            });
        }
        match (live.value, result) {
            (Some(value), Ok(got)) => ensure(got == value, || {
                format!("block {:#x} returned {got}, not {value}", live.addr)
            }),
            (None, Err(Error::NotFinalized { .. })) if !live.decommitted => Ok(()),
            (None, Err(Error::Decommitted { .. })) if live.decommitted => Ok(()),
            (expected, got) => Err(format!(
                "calling {:#x} (expecting {expected:?}) gave {got:?}",
                live.addr
            )),
        }
    }

    fn check(&self) -> Result<(), String> {
        self.heap.check_invariants()?;
        ensure(current_mode() == ThreadMode::Execute, || {
            "the thread was left in write mode".to_string()
        })?;
        let range = self.heap.code_range().unwrap_or(0..usize::MAX);
        for live in &self.live {
            let info = self.heap.find(live.addr);
            ensure(info.is_some_and(|info| info.addr == live.addr), || {
                format!("live block {:#x} is found as {info:?}", live.addr)
            })?;
            ensure(range.contains(&live.addr), || {
                format!(
                    "live block {:#x} outside the code range {range:x?}",
                    live.addr
                )
            })?;
        }
        for stale in &self.stale {
            let refused = self.heap.entry_point(stale);
            ensure(matches!(refused, Err(Error::StaleBlock { .. })), || {
                format!("a stale handle for {:#x} gave {refused:?}", stale.addr())
            })?;
        }
        let stats = self.heap.stats();
        ensure(stats.live_blocks == self.live.len(), || {
            format!(
                "{} live blocks, the driver holds {}",
                stats.live_blocks,
                self.live.len()
            )
        })
    }

    /// Calls every finalized block, frees everything, and checks the heap is empty.
    fn finish(mut self) -> Result<(), String> {
        self.heap.vm().os().clear_failures();
        self.failures_planned = false;
        for i in 0..self.live.len() {
            self.call(i as u8)?;
        }
        for live in std::mem::take(&mut self.live) {
            match live.handle {
                Some(handle) => self.heap.free(handle),
                None => self.heap.free_address(live.addr),
            }
            .map_err(|err| format!("freeing {:#x} at the end: {err}", live.addr))?;
        }
        self.check()?;
        // A parked page whose release was refused stays parked until the next
        // `decommit_all`, which releases it.
        if self.heap.stats().parked_pages > 0 {
            self.heap
                .decommit_all()
                .map_err(|err| format!("decommit_all of an empty heap: {err}"))?;
            self.check()?;
        }
        let stats = self.heap.stats();
        ensure(stats.live_blocks == 0 && stats.parked_pages == 0, || {
            format!("an empty heap has {stats:?}")
        })?;
        // With no live block the heap holds only its spare pages and kept large blocks.
        let used = self.heap.page_allocator().stats().used_bytes;
        let held = stats.spare_pages * self.heap.page_size() + stats.kept_large_bytes;
        ensure(used == held, || {
            format!("an empty heap holds {used} bytes of pages, its spares and kept blocks {held}")
        })
    }
}

/// The patch that makes `return old` return `low` in its low bits: on x86-64 one byte of
/// `mov eax, imm32`'s immediate, on aarch64 the `movz` (a `movk` after it, if any, sets the
/// high half again). Its offset, its bytes and the value it leaves.
fn value_patch(arch: Arch, old: u32, low: u16) -> (usize, Vec<u8>, u32) {
    match arch {
        Arch::X86_64 => {
            let [byte, ..] = low.to_le_bytes();
            (1, vec![byte], (old & !0xFF) | u32::from(byte))
        }
        Arch::Aarch64 => {
            let movz = arch.encode_return_u32(u32::from(low));
            (
                0,
                movz.as_bytes()[..4].to_vec(),
                (old & 0xFFFF_0000) | u32::from(low),
            )
        }
    }
}

/// An operation run inside another block's write session (the thread is in write mode).
fn nested_op(
    heap: &Heap<SimOs>,
    written: usize,
    others: &[(usize, bool)],
    nested: Nested,
    freed: &mut Option<(usize, bool)>,
) -> Result<Option<Block>, String> {
    let pick = |which: u8| (!others.is_empty()).then(|| others[usize::from(which) % others.len()]);
    match nested {
        Nested::Alloc { size } => {
            let size = 1 + usize::from(size) % heap.page_size();
            match heap.alloc(size) {
                Ok(block) => Ok(Some(block)),
                Err(err) if range_full(&err) => Ok(None),
                Err(err) => Err(format!("alloc inside a session failed: {err}")),
            }
        }
        Nested::Free { which } => {
            if let Some((addr, _)) = pick(which) {
                // Refused, it may have been scrubbed already: the caller marks it uncertain.
                let done = heap.free_address(addr).is_ok();
                *freed = Some((addr, done));
                if !done {
                    return Err(format!("free of {addr:#x} inside a session failed"));
                }
            }
            Ok(None)
        }
        Nested::EntryPoint { which } => {
            let result = pick(which).map(|(addr, _)| heap.find(addr));
            // Entry points need a handle; the mode check comes first, so any handle-free
            // way in is refused too: `call` through the OS layer.
            if let Some(Some(info)) = result {
                // SAFETY: refused before anything runs: the thread is in write mode.
                let refused = unsafe { heap.vm().call(info.addr) };
                ensure(
                    matches!(
                        refused,
                        Err(codeheap::vm::Error::WrongThreadMode {
                            current: ThreadMode::Write,
                            ..
                        })
                    ),
                    || format!("running code in a write session gave {refused:?}"),
                )?;
            }
            Ok(None)
        }
        Nested::FreeSelf => {
            let result = heap.free_address(written);
            ensure(matches!(result, Err(Error::BlockBusy { .. })), || {
                format!("freeing the block being written gave {result:?}")
            })?;
            Ok(None)
        }
        Nested::DecommitAll => {
            let result = heap.decommit_all();
            ensure(matches!(result, Err(Error::BlockBusy { .. })), || {
                format!("decommit_all during a session gave {result:?}")
            })?;
            Ok(None)
        }
    }
}
