//! Model test of the heap: random sequences of allocations, writes (finishing and
//! abandoned), calls, frees (by handle and by address, good and bad), `decommit_all`,
//! shrinks, live patches (by handle and by address, good and refused), early entry-point
//! requests and uses of stale handles, each checked against a model of
//! what it must do, on the simulated OS (Apple rules with MAP_JIT; Linux rules with
//! DualMap, Protect and Rwx) and on the real OS (DualMap and Protect, really running the
//! code). Some write sessions run another operation while they are open, as a background
//! compiler's would: allocations, frees and other sessions on the same pages go ahead,
//! entry points are refused in write mode, `decommit_all` and freeing the block being
//! written are `BlockBusy`.
//!
//! The model keeps every live block's handle, the exact bytes it must hold (`image`: traps
//! where nothing was written, what was written elsewhere, the finalize pad past `size`),
//! whether it is finalized, whether `decommit_all` parked it, and the value its code
//! returns; and every block range freed so far. After every step:
//!
//! * live blocks are chunk-aligned, never overlap, and `find` maps their first, middle and
//!   last byte back to them with the right facts;
//! * every live block that is not decommitted reads back exactly as its image; every page of
//!   a decommitted one is no longer committed;
//! * every chunk of a freed range that is on a committed page and in no live block holds
//!   traps (committed code pages belong to the heap: the page allocator keeps no free
//!   committed pages by default);
//! * every committed heap page is `ExecuteRead` in the OS layer's books outside write
//!   sessions (`ReadWrite` inside one under `Protect`, never `ExecuteReadWrite`), and in
//!   the simulator's page table as each strategy dictates;
//! * `stats()` agrees with the model, and only `Protect` makes protect calls;
//! * the thread is back in execute mode;
//! * the heap's own `check_invariants` passes (bookkeeping, page lists, bitmaps, the page
//!   allocator underneath).
#![cfg(not(loom))]

use std::collections::BTreeSet;

use codeheap::vm::{PageState, SysCall};
use codeheap::{
    Arch, Block, BlockInfo, CHUNK, CodeRangeConfig, Error, Heap, HeapConfig, Os, Protection,
    SPARE_PAGES, SimOs, SizeClasses, ThreadMode, WxStrategy, current_mode,
};
use codeheap_test_support::sim_proptest_config;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseResult, TestRunner};

// ---- what each OS lets the test see -------------------------------------------------------

/// What the test can inspect beyond the `Os` trait: the page table of the simulator.
trait Inspect: Os {
    /// The page-table protection of the page holding `addr`, if the OS shows it.
    fn page_protection(&self, addr: usize) -> Option<Protection>;
    /// `mprotect` calls made so far, if the OS counts them.
    fn mprotect_calls(&self) -> Option<u64>;
}

impl Inspect for SimOs {
    fn page_protection(&self, addr: usize) -> Option<Protection> {
        self.protection_at(addr)
    }

    fn mprotect_calls(&self) -> Option<u64> {
        Some(self.syscalls().get(SysCall::Mprotect))
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
impl Inspect for codeheap::NativeOs {
    fn page_protection(&self, _addr: usize) -> Option<Protection> {
        None
    }

    fn mprotect_calls(&self) -> Option<u64> {
        None
    }
}

/// The page-table protection the simulator must show for a heap page.
fn sim_protection(strategy: WxStrategy, in_session: bool) -> Protection {
    match strategy {
        WxStrategy::Protect if in_session => Protection::ReadWrite,
        WxStrategy::Protect | WxStrategy::DualMap => Protection::ExecuteRead,
        // MAP_JIT pages report RWX (as `vm_region` does); Rwx pages are RWX.
        WxStrategy::MapJit | WxStrategy::Rwx => Protection::ExecuteReadWrite,
    }
}

/// The protection the OS layer's books must show for a heap page.
fn books_protection(strategy: WxStrategy, in_session: bool) -> Protection {
    if in_session && strategy == WxStrategy::Protect {
        Protection::ReadWrite
    } else {
        Protection::ExecuteRead
    }
}

// ---- operations ---------------------------------------------------------------------------

/// A request size, relative to the page size of the backend.
#[derive(Debug, Clone, Copy)]
enum SizeKind {
    Zero,
    /// 1..=600 bytes.
    Small(u32),
    /// 600..=page bytes.
    Medium(u32),
    /// page+1..=3*page bytes: a large block.
    Large(u32),
}

impl SizeKind {
    fn size(self, page: usize) -> usize {
        match self {
            SizeKind::Zero => 0,
            SizeKind::Small(n) => 1 + n as usize % 600,
            SizeKind::Medium(n) => 600 + n as usize % (page - 600 + 1),
            SizeKind::Large(n) => page + 1 + n as usize % (2 * page),
        }
    }
}

/// How an abandoned write session fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// Writes some bytes, then the emitter returns its own error.
    EmitterError,
    /// Writes some bytes, then writes across the end of the block.
    PastEndAfterBytes,
    /// Fills across the end of the block first thing.
    FillPastEnd,
    /// Writes at an offset whose end overflows `usize`.
    OverflowingOffset,
}

/// Which address `free_address` gets.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The start of a live block.
    Live,
    /// An address inside a live block, past its start.
    Interior(u32),
    /// The start of a block freed earlier, if no live block starts there now.
    Freed,
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(SizeKind),
    /// `emit_code` of a finished buffer of this size (a `return value` function at 0 when
    /// it fits, random bytes after it).
    EmitCode(SizeKind, u64),
    /// A write session; `during` runs inside it, after the session has begun and before
    /// the bytes are written.
    Write {
        which: Index,
        seed: u64,
        during: Option<Box<During>>,
    },
    WriteFailing {
        which: Index,
        seed: u64,
        how: Failure,
    },
    Call {
        which: Index,
    },
    Free {
        which: Index,
    },
    FreeAddress {
        which: Index,
        target: Target,
    },
    DecommitAll,
    /// `trim`: everything kept without a live block goes back, live blocks stay.
    Trim,
    EntryBeforeFinalize(SizeKind),
    /// A handle whose block was freed by address: every use is `StaleBlock`.
    UseStale {
        which: Index,
        how: StaleUse,
    },
    /// `shrink` to a size `to` picks: mostly a smaller one, sometimes 0 or one byte more.
    Shrink {
        which: Index,
        to: u32,
    },
    /// `patch` (or `patch_address`, by bit 32 of the seed, within the block's size): with
    /// `len % 11` 0, of the function's value (one byte of x86-64's immediate, aarch64's
    /// `movz`) if the block holds one; otherwise of `len % 11 - 1` random bytes at
    /// `at % (size + 16)`, refused unless one aligned store within the size of a finalized
    /// block makes it.
    Patch {
        which: Index,
        at: u32,
        len: u8,
        seed: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum StaleUse {
    Free,
    Write,
    Entry,
}

/// What a write session does besides writing (the heap's lock is not held meanwhile, and
/// the thread is in write mode).
#[derive(Debug, Clone)]
enum During {
    /// Any operation but a nested one: allocations, frees and other write sessions
    /// (possibly on the same page) go ahead; entry points are refused (`WrongThreadMode`),
    /// `decommit_all` too (`BlockBusy`).
    Op(Op),
    /// `free_address` of the block being written: `BlockBusy`.
    FreeSelf,
    /// `find` of the block being written: not finalized.
    FindSelf,
}

fn size_kind() -> impl Strategy<Value = SizeKind> {
    prop_oneof![
        1 => Just(SizeKind::Zero),
        12 => any::<u32>().prop_map(SizeKind::Small),
        3 => any::<u32>().prop_map(SizeKind::Medium),
        2 => any::<u32>().prop_map(SizeKind::Large),
    ]
}

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        Just(Failure::EmitterError),
        Just(Failure::PastEndAfterBytes),
        Just(Failure::FillPastEnd),
        Just(Failure::OverflowingOffset),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => Just(Target::Live),
        1 => any::<u32>().prop_map(Target::Interior),
        1 => Just(Target::Freed),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    ops(true)
}

/// Operations; writes carry something to do during the session if `nest`.
fn ops(nest: bool) -> BoxedStrategy<Op> {
    let during = if nest {
        prop::option::weighted(0.3, during().prop_map(Box::new)).boxed()
    } else {
        Just(None).boxed()
    };
    prop_oneof![
        20 => size_kind().prop_map(Op::Alloc),
        6 => (size_kind(), any::<u64>()).prop_map(|(kind, seed)| Op::EmitCode(kind, seed)),
        20 => (any::<Index>(), any::<u64>(), during)
            .prop_map(|(which, seed, during)| Op::Write { which, seed, during }),
        5 => (any::<Index>(), any::<u64>(), failure())
            .prop_map(|(which, seed, how)| Op::WriteFailing { which, seed, how }),
        16 => any::<Index>().prop_map(|which| Op::Call { which }),
        4 => any::<Index>().prop_map(|which| Op::Free { which }),
        6 => (any::<Index>(), target())
            .prop_map(|(which, target)| Op::FreeAddress { which, target }),
        1 => Just(Op::DecommitAll),
        1 => Just(Op::Trim),
        3 => size_kind().prop_map(Op::EntryBeforeFinalize),
        2 => (any::<Index>(), stale_use()).prop_map(|(which, how)| Op::UseStale { which, how }),
        4 => (any::<Index>(), any::<u32>()).prop_map(|(which, to)| Op::Shrink { which, to }),
        4 => (any::<Index>(), any::<u32>(), any::<u8>(), any::<u64>())
            .prop_map(|(which, at, len, seed)| Op::Patch { which, at, len, seed }),
    ]
    .boxed()
}

fn stale_use() -> impl Strategy<Value = StaleUse> {
    prop_oneof![
        Just(StaleUse::Free),
        Just(StaleUse::Write),
        Just(StaleUse::Entry),
    ]
}

fn during() -> impl Strategy<Value = During> {
    prop_oneof![
        8 => ops(false).prop_map(During::Op),
        1 => Just(During::FreeSelf),
        1 => Just(During::FindSelf),
    ]
}

// ---- the model ----------------------------------------------------------------------------

#[derive(Debug)]
struct Live {
    block: Block,
    /// The exact bytes of `[addr, addr + capacity)`.
    image: Vec<u8>,
    finalized: bool,
    decommitted: bool,
    /// The value the code at offset 0 returns, if a `return u32` function was written there.
    returns: Option<u32>,
    /// Whether it has whole pages of its own (allocated past a page; still so if shrunk).
    large: bool,
}

impl Live {
    fn addr(&self) -> usize {
        self.block.addr()
    }

    fn size(&self) -> usize {
        self.block.size()
    }

    fn capacity(&self) -> usize {
        self.block.capacity()
    }
}

/// A block whose write session is open: taken out of `live` meanwhile.
#[derive(Debug, Clone, Copy)]
struct Session {
    addr: usize,
    size: usize,
    capacity: usize,
    large: bool,
}

/// The value the function at the start of `code` returns, if it is a `return u32` one.
fn return_value(arch: Arch, code: &[u8]) -> Option<u32> {
    let word = |i: usize| {
        let bytes = code.get(4 * i..4 * i + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let value = match arch {
        Arch::X86_64 => u32::from_le_bytes(code.get(1..5)?.try_into().ok()?),
        Arch::Aarch64 => {
            let (low, high) = ((word(0)? >> 5) & 0xFFFF, (word(1)? >> 5) & 0xFFFF);
            low | high << 16
        }
    };
    code.starts_with(arch.encode_return_u32(value).as_bytes())
        .then_some(value)
}

/// A deterministic byte stream from a seed (splitmix64).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Bytes of `len` traps, as the heap fills a fresh or freed block (chunk-aligned).
fn traps(arch: Arch, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    arch.fill_traps(&mut bytes);
    bytes
}

/// What finalizing does to `image[size..]`: zero up to the next instruction boundary (a
/// partial aarch64 word), traps from there on.
fn pad_tail(arch: Arch, image: &mut [u8], size: usize) {
    let aligned = size
        .next_multiple_of(arch.instruction_alignment())
        .min(image.len());
    image[size..aligned].fill(0);
    arch.fill_traps(&mut image[aligned..]);
}

/// Some in-bounds writes for a block of `size` bytes: `(offset, bytes)`.
fn some_bytes(seed: u64, size: usize, lowest: usize) -> Option<(usize, Vec<u8>)> {
    if lowest >= size {
        return None;
    }
    let offset = lowest + (seed >> 8) as usize % (size - lowest);
    let len = (1 + (seed >> 24) as usize % 64).min(size - offset);
    Some((offset, random_bytes(seed, len)))
}

/// The first mismatch between what a block holds and its image, described.
fn first_difference(found: &[u8], expected: &[u8]) -> Option<String> {
    let at = found.iter().zip(expected).position(|(a, b)| a != b)?;
    let end = (at + 16).min(found.len());
    Some(format!(
        "first difference at offset {at}: found {:02x?}, expected {:02x?}",
        &found[at..end],
        &expected[at..end]
    ))
}

// ---- the driver ---------------------------------------------------------------------------

struct Driver<'h, O: Inspect> {
    heap: &'h Heap<O>,
    arch: Arch,
    page: usize,
    strategy: WxStrategy,
    classes: SizeClasses,
    live: Vec<Live>,
    /// `(addr, capacity)` of every block freed so far.
    freed: BTreeSet<(usize, usize)>,
    /// Open write sessions, innermost last.
    sessions: Vec<Session>,
    /// Handles of blocks freed by address.
    stale: Vec<Block>,
}

/// Checks made inside a write session (the heap's lock is not held there): the thread is
/// in write mode, and every page of the block is writable and never RWX under `Protect`.
fn session_violations<O: Inspect>(heap: &Heap<O>, addr: usize, capacity: usize) -> Option<String> {
    if current_mode() != ThreadMode::Write {
        return Some(format!(
            "in a session the thread is in {:?}",
            current_mode()
        ));
    }
    let strategy = heap.strategy();
    let page = heap.page_size();
    for page_addr in (addr..addr + capacity).step_by(page) {
        let books = heap.vm().query(page_addr).map(|info| info.state);
        let expected = PageState::Committed(books_protection(strategy, true));
        if books != Ok(expected) {
            return Some(format!(
                "in a session page {page_addr:#x} is {books:?} in the books, not {expected:?}"
            ));
        }
        let table = heap.vm().os().page_protection(page_addr);
        if table.is_some_and(|p| p != sim_protection(strategy, true)) {
            return Some(format!(
                "in a session page {page_addr:#x} is {table:?} in the page table"
            ));
        }
    }
    None
}

impl<'h, O: Inspect> Driver<'h, O> {
    fn new(heap: &'h Heap<O>) -> Self {
        Driver {
            heap,
            arch: heap.arch(),
            page: heap.page_size(),
            strategy: heap.strategy(),
            classes: heap.size_classes(),
            live: Vec::new(),
            freed: BTreeSet::new(),
            sessions: Vec::new(),
            stale: Vec::new(),
        }
    }

    fn run(mut self, ops: &[Op]) -> TestCaseResult {
        for (step, op) in ops.iter().enumerate() {
            self.step(op)
                .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
            self.check()
                .map_err(|e| TestCaseError::fail(format!("after step {step} {op:?}: {e}")))?;
        }
        self.finish()
    }

    fn pick(&self, which: &Index) -> Option<usize> {
        (!self.live.is_empty()).then(|| which.index(self.live.len()))
    }

    fn expected_capacity(&self, size: usize) -> usize {
        if size > self.page {
            size.next_multiple_of(self.page)
        } else if self.classes == SizeClasses::Chunks {
            size.next_multiple_of(CHUNK)
        } else {
            size.next_power_of_two().max(CHUNK)
        }
    }

    fn step(&mut self, op: &Op) -> TestCaseResult {
        match *op {
            Op::Alloc(kind) => {
                self.alloc(kind)?;
            }
            Op::EmitCode(kind, seed) => self.emit_code(kind, seed)?,
            Op::Write {
                ref which,
                seed,
                ref during,
            } => self.write(which, seed, during.as_deref())?,
            Op::WriteFailing {
                ref which,
                seed,
                how,
            } => self.write_failing(which, seed, how)?,
            Op::Call { ref which } => self.call(which)?,
            Op::Free { ref which } => {
                if let Some(i) = self.pick(which) {
                    let live = self.live.swap_remove(i);
                    let (addr, capacity) = (live.addr(), live.capacity());
                    prop_assert_eq!(self.heap.free(live.block), Ok(()));
                    self.freed.insert((addr, capacity));
                }
            }
            Op::FreeAddress { ref which, target } => self.free_address(which, target)?,
            Op::DecommitAll => {
                if let Some(session) = self.sessions.last() {
                    let busy = Err(Error::BlockBusy { addr: session.addr });
                    prop_assert_eq!(self.heap.decommit_all(), busy);
                    return Ok(());
                }
                prop_assert_eq!(self.heap.decommit_all(), Ok(()));
                prop_assert_eq!(self.heap.stats().kept_large_blocks, 0);
                for live in &mut self.live {
                    live.decommitted = true;
                }
            }
            Op::Trim => {
                let before = self.heap.stats().committed_bytes;
                let decommitted = self.heap.trim();
                let after = self.heap.stats();
                prop_assert_eq!(decommitted, Ok(before - after.committed_bytes));
                let kept = (after.kept_blocks, after.kept_large_blocks);
                prop_assert_eq!((kept, after.spare_pages), ((0, 0), 0));
                prop_assert_eq!(self.heap.page_allocator().stats().free_bytes, 0);
            }
            Op::UseStale { ref which, how } => self.use_stale(which, how)?,
            Op::Shrink { ref which, to } => self.shrink(which, to)?,
            Op::Patch {
                ref which,
                at,
                len,
                seed,
            } => self.patch(which, at, len, seed)?,
            Op::EntryBeforeFinalize(kind) => {
                if let Some(i) = self.alloc(kind)? {
                    let block = &self.live[i].block;
                    let addr = block.addr();
                    let expected = match self.sessions.is_empty() {
                        true => Err(Error::NotFinalized { addr }),
                        false => Err(wrong_mode()),
                    };
                    prop_assert_eq!(self.heap.entry_point(block), expected.clone());
                    // SAFETY: the pointer is never called (and must not even be handed out).
                    let function = unsafe { self.heap.function::<extern "C" fn() -> u32>(block) };
                    prop_assert_eq!(function.map(|f| f as usize), expected);
                }
            }
        }
        Ok(())
    }

    /// Allocates a block of `kind`'s size; its index in `live`, or `None` for a refused size.
    fn alloc(&mut self, kind: SizeKind) -> Result<Option<usize>, TestCaseError> {
        let size = kind.size(self.page);
        let result = self.heap.alloc(size);
        if size == 0 {
            prop_assert_eq!(result, Err(Error::ZeroSize));
            return Ok(None);
        }
        let block = result.map_err(|e| TestCaseError::fail(format!("alloc({size}): {e}")))?;
        let capacity = self.check_placed(&block, size)?;
        self.live.push(Live {
            block,
            image: traps(self.arch, capacity),
            finalized: false,
            decommitted: false,
            returns: None,
            large: size > self.page,
        });
        Ok(Some(self.live.len() - 1))
    }

    /// `emit_code` of a finished function: placed as `alloc` places, holding the bytes,
    /// finalized.
    fn emit_code(&mut self, kind: SizeKind, seed: u64) -> TestCaseResult {
        let size = kind.size(self.page);
        let value = seed as u32;
        let code = self.arch.encode_return_u32(value);
        let mut bytes = random_bytes(seed, size);
        let returns = (code.as_bytes().len() <= size).then(|| {
            bytes[..code.as_bytes().len()].copy_from_slice(code.as_bytes());
            value
        });
        let result = self.heap.emit_code(&bytes);
        if size == 0 {
            prop_assert_eq!(result, Err(Error::ZeroSize));
            return Ok(());
        }
        let block = result.map_err(|e| TestCaseError::fail(format!("emit_code({size}): {e}")))?;
        let capacity = self.check_placed(&block, size)?;
        let mut image = traps(self.arch, capacity);
        image[..size].copy_from_slice(&bytes);
        pad_tail(self.arch, &mut image, size);
        self.live.push(Live {
            block,
            image,
            finalized: true,
            decommitted: false,
            returns,
            large: size > self.page,
        });
        Ok(())
    }

    /// Checks a new block's size, capacity and alignment; its capacity.
    fn check_placed(&self, block: &Block, size: usize) -> Result<usize, TestCaseError> {
        let capacity = self.expected_capacity(size);
        prop_assert_eq!(block.size(), size);
        prop_assert_eq!(
            block.capacity(),
            capacity,
            "capacity of a {}-byte block",
            size
        );
        let align = if size > self.page { self.page } else { CHUNK };
        prop_assert!(
            block.addr().is_multiple_of(align),
            "block {:#x} not {}-aligned",
            block.addr(),
            align
        );
        if let Some(range) = self.heap.code_range() {
            prop_assert!(
                range.start <= block.addr() && block.addr() + capacity <= range.end,
                "block {:#x} outside the code range {:x?}",
                block.addr(),
                range
            );
        }
        Ok(capacity)
    }

    fn write(&mut self, which: &Index, seed: u64, during: Option<&During>) -> TestCaseResult {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        // Out of `live` while its session is open, so operations run during the session
        // can borrow the driver.
        let mut live = self.live.swap_remove(i);
        let result = self.write_session(&mut live, seed, during);
        self.live.push(live);
        result
    }

    fn write_session(
        &mut self,
        live: &mut Live,
        seed: u64,
        during: Option<&During>,
    ) -> TestCaseResult {
        let (heap, arch) = (self.heap, self.arch);
        let (addr, size, capacity) = (live.addr(), live.size(), live.capacity());

        // What to write: a `return value` function at 0 when it fits (sometimes with more
        // bytes after it), else random bytes.
        let value = seed as u32;
        let code = arch.encode_return_u32(value);
        let mut pieces = Vec::new();
        let returns = if code.as_bytes().len() <= size {
            pieces.push((0, code.as_bytes().to_vec()));
            if seed & (1 << 60) != 0 {
                pieces.extend(some_bytes(seed, size, code.as_bytes().len()));
            }
            Some(value)
        } else {
            pieces.extend(some_bytes(seed, size, 0));
            None
        };

        // Sometimes the code turns out shorter than the block: the session truncates it.
        let truncate_to = match seed & (1 << 59) {
            0 => size,
            _ => 1 + (seed >> 40) as usize % size,
        };

        let mut ran = false;
        let mut violation = None;
        let mut nested = Ok(());
        self.sessions.push(Session {
            addr,
            size,
            capacity,
            large: live.large,
        });
        let result = heap.write(&mut live.block, |writer| {
            ran = true;
            violation = session_violations(heap, addr, capacity);
            if writer.addr() != addr || writer.len() != size || writer.is_empty() {
                violation = Some(format!(
                    "writer covers {:#x}+{}, block is {addr:#x}+{size}",
                    writer.addr(),
                    writer.len()
                ));
            }
            if let Some(during) = during {
                nested = self.during_session(during, addr);
                if violation.is_none() {
                    violation = session_violations(heap, addr, capacity)
                        .map(|v| format!("after {during:?}: {v}"));
                }
            }
            for (offset, bytes) in &pieces {
                writer.write(*offset, bytes)?;
            }
            writer.truncate(truncate_to)?;
            Ok(!value)
        });
        self.sessions.pop();
        nested.map_err(|e| TestCaseError::fail(format!("during the session: {e}")))?;
        if let Some(violation) = violation {
            return Err(TestCaseError::fail(violation));
        }
        if live.decommitted {
            prop_assert_eq!(result, Err(Error::Decommitted { addr }));
            prop_assert!(!ran, "the emitter ran on a decommitted block");
            return Ok(());
        }
        prop_assert_eq!(result, Ok(!value));
        for (offset, bytes) in &pieces {
            live.image[*offset..*offset + bytes.len()].copy_from_slice(bytes);
        }
        pad_tail(arch, &mut live.image, size);
        live.finalized = true;
        live.returns = returns;
        self.cut(live, size, truncate_to, true)
    }

    /// Runs `during` inside the write session of the block at `addr`.
    fn during_session(&mut self, during: &During, addr: usize) -> TestCaseResult {
        match during {
            During::Op(op) => self.step(op),
            During::FreeSelf => {
                let busy = Err(Error::BlockBusy { addr });
                prop_assert_eq!(self.heap.free_address(addr), busy);
                Ok(())
            }
            During::FindSelf => {
                let expected = self.expected_find(addr);
                prop_assert_eq!(self.heap.find(addr), expected);
                Ok(())
            }
        }
    }

    fn write_failing(&mut self, which: &Index, seed: u64, how: Failure) -> TestCaseResult {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let (heap, arch) = (self.heap, self.arch);
        let live = &mut self.live[i];
        let (addr, size, capacity) = (live.addr(), live.size(), live.capacity());
        let before = matches!(how, Failure::EmitterError | Failure::PastEndAfterBytes)
            .then(|| some_bytes(seed, size, 0))
            .flatten();
        let give_up = Error::InvalidConfig {
            reason: "the emitter gave up",
        };
        let over = 1 + (seed >> 40) as usize % 8;
        let expected = match how {
            Failure::EmitterError => give_up.clone(),
            Failure::PastEndAfterBytes => Error::OutOfBounds {
                offset: size - 1,
                len: 1 + over,
                size,
            },
            Failure::FillPastEnd => Error::OutOfBounds {
                offset: 0,
                len: size + over,
                size,
            },
            Failure::OverflowingOffset => Error::OutOfBounds {
                offset: usize::MAX - 1,
                len: 4,
                size,
            },
        };

        let mut ran = false;
        let mut violation = None;
        let result: Result<(), Error> = heap.write(&mut live.block, |writer| {
            ran = true;
            violation = session_violations(heap, addr, capacity);
            if let Some((offset, bytes)) = &before {
                writer.write(*offset, bytes)?;
            }
            match how {
                Failure::EmitterError => Err(give_up),
                Failure::PastEndAfterBytes => writer.write(size - 1, &vec![0x90; 1 + over]),
                Failure::FillPastEnd => writer.fill(0, size + over, arch.trap_bytes()),
                Failure::OverflowingOffset => writer.write(usize::MAX - 1, &[1, 2, 3, 4]),
            }
        });
        if let Some(violation) = violation {
            return Err(TestCaseError::fail(violation));
        }
        if live.decommitted {
            prop_assert_eq!(result, Err(Error::Decommitted { addr }));
            prop_assert!(!ran, "the emitter ran on a decommitted block");
            return Ok(());
        }
        prop_assert_eq!(result, Err(expected));
        if let Some((offset, bytes)) = &before {
            live.image[*offset..*offset + bytes.len()].copy_from_slice(bytes);
        }
        live.finalized = false;
        Ok(())
    }

    fn shrink(&mut self, which: &Index, to: u32) -> TestCaseResult {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        // Out of `live` meanwhile, as in `write`.
        let mut live = self.live.swap_remove(i);
        let result = self.shrink_live(&mut live, to);
        self.live.push(live);
        result
    }

    fn shrink_live(&mut self, live: &mut Live, to: u32) -> TestCaseResult {
        let (addr, size) = (live.addr(), live.size());
        let new_size = match to % 16 {
            0 => 0,
            1 => size + 1,
            _ => 1 + (to >> 4) as usize % size,
        };
        let result = self.heap.shrink(&mut live.block, new_size);
        let refused = if new_size == 0 {
            Some(Error::ZeroSize)
        } else if new_size > size {
            Some(Error::CannotGrow { size, new_size })
        } else if live.decommitted {
            Some(Error::Decommitted { addr })
        } else {
            None
        };
        if let Some(error) = refused {
            prop_assert_eq!(result, Err(error));
            prop_assert_eq!(live.size(), size, "a refused shrink changes nothing");
            return Ok(());
        }
        prop_assert_eq!(result, Ok(()));
        self.cut(live, size, new_size, false)
    }

    /// The model of shrinking `live`, of `size` bytes, to `new_size` (in a write session, if
    /// `in_session`): its bytes past `new_size` padded as finalizing pads them, its capacity
    /// that of the new size (a large block's pages but those it cannot give back; under
    /// power-of-two classes no less than its page's bucket), the rest of the old capacity
    /// freed.
    fn cut(
        &mut self,
        live: &mut Live,
        size: usize,
        new_size: usize,
        in_session: bool,
    ) -> TestCaseResult {
        let (addr, capacity) = (live.addr(), live.image.len());
        if new_size == size {
            prop_assert_eq!((live.size(), live.capacity()), (size, capacity));
            return Ok(());
        }
        let new_capacity = if !live.large {
            let class = self.expected_capacity(new_size);
            if self.classes == SizeClasses::PowerOfTwo {
                // No less than its page's bucket, which the model does not follow: a power
                // of two of chunks between its new class and what it had.
                let got = live.capacity();
                prop_assert!(
                    got.is_power_of_two() && (class..=capacity).contains(&got),
                    "capacity {} of a block shrunk from {} to {}",
                    got,
                    size,
                    new_size
                );
                got
            } else {
                class
            }
        } else {
            let own_mapping =
                capacity / self.page > self.heap.page_allocator().config().code_pages();
            let open = in_session && self.strategy == WxStrategy::Protect;
            if own_mapping || open {
                capacity
            } else {
                new_size.next_multiple_of(self.page)
            }
        };
        prop_assert_eq!(live.size(), new_size);
        prop_assert_eq!(
            live.capacity(),
            new_capacity,
            "capacity of a block shrunk from {} to {}",
            size,
            new_size
        );
        if new_size < size {
            pad_tail(self.arch, &mut live.image, new_size);
        }
        live.image.truncate(new_capacity);
        let arch = self.arch;
        let code_len = |value: u32| arch.encode_return_u32(value).as_bytes().len();
        live.returns = live.returns.filter(|&value| code_len(value) <= new_size);
        if new_capacity < capacity {
            self.freed
                .insert((addr + new_capacity, capacity - new_capacity));
        }
        Ok(())
    }

    fn patch(&mut self, which: &Index, at: u32, len: u8, seed: u64) -> TestCaseResult {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let arch = self.arch;
        let live = &mut self.live[i];
        let (addr, size) = (live.addr(), live.size());
        let (offset, bytes) = match (len % 11, live.returns) {
            (0, Some(_)) => {
                let low = seed as u16;
                let movz = arch.encode_return_u32(u32::from(low));
                match arch {
                    Arch::X86_64 => (1, vec![low as u8]),
                    Arch::Aarch64 => (0, movz.as_bytes()[..4].to_vec()),
                }
            }
            (n, _) => {
                let offset = at as usize % (size + 16);
                (offset, random_bytes(seed, usize::from(n.saturating_sub(1))))
            }
        };
        let n = bytes.len();
        let one_store = [1, 2, 4, 8].contains(&n)
            && n >= arch.instruction_alignment()
            && (addr + offset).is_multiple_of(n);
        let refused = if !one_store {
            Some(Error::PatchNotAtomic { offset, len: n })
        } else if live.decommitted {
            Some(Error::Decommitted { addr })
        } else if !live.finalized {
            Some(Error::NotFinalized { addr })
        } else if offset + n > size {
            Some(Error::OutOfBounds {
                offset,
                len: n,
                size,
            })
        } else {
            None
        };
        // By address (the same checks, the block found from the address) when the address
        // lies in the block's code, so that it cannot find another block.
        let by_address = (seed >> 32) & 1 == 1 && offset < size;
        let result = match by_address {
            true => self.heap.patch_address(addr + offset, &bytes),
            false => self.heap.patch(&live.block, offset, &bytes),
        };
        let patched = result.is_ok();
        prop_assert_eq!(result, refused.map_or(Ok(()), Err));
        if patched {
            live.image[offset..offset + n].copy_from_slice(&bytes);
            live.returns = return_value(arch, &live.image[..size]);
        }
        Ok(())
    }

    fn call(&mut self, which: &Index) -> TestCaseResult {
        let Some(i) = self.pick(which) else {
            return Ok(());
        };
        let live = &self.live[i];
        let addr = live.addr();
        let entry = self.heap.entry_point(&live.block);
        if !self.sessions.is_empty() {
            prop_assert_eq!(entry, Err(wrong_mode()));
            return Ok(());
        }
        if live.decommitted {
            prop_assert_eq!(entry, Err(Error::Decommitted { addr }));
            return Ok(());
        }
        if !live.finalized {
            prop_assert_eq!(entry, Err(Error::NotFinalized { addr }));
            return Ok(());
        }
        prop_assert_eq!(entry, Ok(addr));
        let Some(value) = live.returns else {
            return Ok(());
        };
        let code = self.arch.encode_return_u32(value);
        if !live.image.starts_with(code.as_bytes()) {
            // An abandoned write clobbered the function, and a later write left it so.
            return Ok(());
        }
        prop_assert_eq!(call_verified(self.heap, &live.block, value), Ok(value));
        Ok(())
    }

    fn use_stale(&mut self, which: &Index, how: StaleUse) -> TestCaseResult {
        if self.stale.is_empty() {
            return Ok(());
        }
        let i = which.index(self.stale.len());
        let addr = self.stale[i].addr();
        let stale = Error::StaleBlock { addr };
        match how {
            StaleUse::Free => {
                let block = self.stale.swap_remove(i);
                prop_assert_eq!(self.heap.free(block), Err(stale));
            }
            StaleUse::Write => {
                let mut ran = false;
                let result = self.heap.write(&mut self.stale[i], |writer| {
                    ran = true;
                    writer.write(0, &[0])
                });
                prop_assert_eq!(result, Err(stale));
                prop_assert!(!ran, "the emitter ran on a stale handle");
            }
            StaleUse::Entry => {
                let expected = match self.sessions.is_empty() {
                    true => stale,
                    false => wrong_mode(),
                };
                prop_assert_eq!(self.heap.entry_point(&self.stale[i]), Err(expected));
            }
        }
        Ok(())
    }

    fn free_address(&mut self, which: &Index, target: Target) -> TestCaseResult {
        match target {
            Target::Live => {
                let Some(i) = self.pick(which) else {
                    return Ok(());
                };
                let live = self.live.swap_remove(i);
                let (addr, capacity) = (live.addr(), live.capacity());
                prop_assert_eq!(self.heap.free_address(addr), Ok(()));
                self.freed.insert((addr, capacity));
                // The handle is stale now, whatever comes to live at its address.
                self.stale.push(live.block);
            }
            Target::Interior(offset) => {
                let Some(i) = self.pick(which) else {
                    return Ok(());
                };
                let block = self.live[i].addr();
                let addr = block + 1 + offset as usize % (self.live[i].capacity() - 1);
                let expected = Err(Error::InteriorAddress { addr, block });
                prop_assert_eq!(self.heap.free_address(addr), expected);
            }
            Target::Freed => {
                let mut starts: BTreeSet<usize> = self.live.iter().map(Live::addr).collect();
                starts.extend(self.sessions.iter().map(|session| session.addr));
                let candidates: Vec<usize> = self
                    .freed
                    .iter()
                    .map(|&(addr, _)| addr)
                    .filter(|addr| !starts.contains(addr))
                    .collect();
                if candidates.is_empty() {
                    return Ok(());
                }
                let addr = candidates[which.index(candidates.len())];
                let result = self.heap.free_address(addr);
                if let Some(holder) = self.expected_find(addr) {
                    let block = holder.addr;
                    prop_assert_eq!(result, Err(Error::InteriorAddress { addr, block }));
                    return Ok(());
                }
                // A page still holding a small block, or committed, lies in a segment the
                // heap still has reserved: a double free there is `NotAllocated`. Otherwise
                // the segment may have gone back to the OS (`NotFromHeap`).
                let page = addr - addr % self.page;
                let small_on_page = |(start, size): (usize, usize)| {
                    size <= self.page && start - start % self.page == page
                };
                let held = self
                    .live
                    .iter()
                    .map(|l| (l.addr(), l.size()))
                    .any(small_on_page)
                    || self
                        .sessions
                        .iter()
                        .map(|s| (s.addr, s.size))
                        .any(small_on_page)
                    || self.committed(page);
                if held {
                    prop_assert_eq!(result, Err(Error::NotAllocated { addr }));
                } else {
                    prop_assert!(
                        matches!(
                            result,
                            Err(Error::NotAllocated { .. } | Error::NotFromHeap { .. })
                        ),
                        "double free at {:#x} gave {:?}",
                        addr,
                        result
                    );
                }
            }
        }
        Ok(())
    }

    fn committed(&self, page: usize) -> bool {
        matches!(
            self.heap.vm().query(page),
            Ok(info) if matches!(info.state, PageState::Committed(_))
        )
    }

    // ---- invariants ---------------------------------------------------------------------

    fn check(&self) -> TestCaseResult {
        prop_assert_eq!(current_mode(), ThreadMode::Execute);
        self.heap.check_invariants().map_err(TestCaseError::fail)?;
        self.check_layout()?;
        self.check_stats()?;
        for live in &self.live {
            self.check_find(live)?;
            if live.decommitted {
                self.check_decommitted(live)?;
            } else {
                self.check_contents(live)?;
                self.check_pages(live.addr(), live.capacity())?;
            }
        }
        self.check_freed()
    }

    fn check_layout(&self) -> TestCaseResult {
        let mut spans: Vec<(usize, usize)> = self
            .live
            .iter()
            .map(|live| (live.addr(), live.capacity()))
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            let ((a, a_cap), (b, _)) = (pair[0], pair[1]);
            prop_assert!(
                a + a_cap <= b,
                "blocks {:#x}+{:#x} and {:#x} overlap",
                a,
                a_cap,
                b
            );
        }
        Ok(())
    }

    fn check_stats(&self) -> TestCaseResult {
        let stats = self.heap.stats();
        let large = |live: &&Live| live.large;
        let requested: usize = self.live.iter().map(Live::size).sum();
        let allocated: usize = self.live.iter().map(Live::capacity).sum();
        prop_assert_eq!(stats.live_blocks, self.live.len(), "live_blocks");
        prop_assert_eq!(stats.requested_bytes, requested, "requested_bytes");
        prop_assert_eq!(stats.allocated_bytes, allocated, "allocated_bytes");
        prop_assert_eq!(stats.rounding_loss, allocated - requested, "rounding_loss");
        prop_assert_eq!(
            stats.large_blocks,
            self.live.iter().filter(large).count(),
            "large_blocks"
        );
        prop_assert_eq!(
            stats.large_bytes,
            self.live
                .iter()
                .filter(large)
                .map(Live::capacity)
                .sum::<usize>(),
            "large_bytes"
        );
        for bucket in &stats.buckets {
            // A bucket holds the blocks whose capacity rounds up to its size (under chunk
            // classes, capacities between it and the bucket below).
            let (blocks, used) = self
                .live
                .iter()
                .filter(|live| {
                    !live.large && live.capacity().next_power_of_two() == bucket.block_size
                })
                .fold((0, 0), |(n, bytes), live| (n + 1, bytes + live.capacity()));
            prop_assert_eq!(bucket.blocks, blocks, "blocks of {}", bucket.block_size);
            prop_assert_eq!(
                bucket.used_bytes,
                used,
                "used bytes of {}",
                bucket.block_size
            );
        }
        if self.strategy != WxStrategy::Protect {
            prop_assert_eq!(
                stats.protect_calls_made,
                0,
                "protect calls under {}",
                self.strategy
            );
        }
        if self.strategy == WxStrategy::MapJit
            && let Some(calls) = self.heap.vm().os().mprotect_calls()
        {
            prop_assert_eq!(calls, 0, "mprotect calls on MAP_JIT memory");
        }
        Ok(())
    }

    /// What `find` must say about `addr`: the live block holding it, if any (a block being
    /// written is not finalized).
    fn expected_find(&self, addr: usize) -> Option<BlockInfo> {
        let info = |start: usize, size: usize, capacity: usize, finalized: bool, large: bool| {
            (start..start + capacity)
                .contains(&addr)
                .then_some(BlockInfo {
                    addr: start,
                    size,
                    capacity,
                    finalized,
                    large,
                })
        };
        let live = self.live.iter().find_map(|live| {
            let finalized = live.finalized && !live.decommitted;
            info(
                live.addr(),
                live.size(),
                live.capacity(),
                finalized,
                live.large,
            )
        });
        let writing = || {
            self.sessions
                .iter()
                .find_map(|s| info(s.addr, s.size, s.capacity, false, s.large))
        };
        live.or_else(writing)
    }

    /// `find` of the block's first, a middle and its last byte gives the block; of the byte
    /// before it and the byte after it, whatever holds those.
    fn check_find(&self, live: &Live) -> TestCaseResult {
        let (addr, capacity) = (live.addr(), live.capacity());
        let probes = [
            addr,
            addr + capacity / 2 + 1,
            addr + capacity - 1,
            addr - 1,
            addr + capacity,
        ];
        for probe in probes {
            let expected = self.expected_find(probe);
            prop_assert_eq!(self.heap.find(probe), expected, "find({:#x})", probe);
        }
        prop_assert_eq!(self.expected_find(addr).map(|info| info.addr), Some(addr));
        prop_assert!(self.heap.is_jit_address(addr));
        Ok(())
    }

    fn check_contents(&self, live: &Live) -> TestCaseResult {
        let mut found = vec![0; live.capacity()];
        self.heap
            .vm()
            .read(live.addr(), &mut found)
            .map_err(|e| TestCaseError::fail(format!("reading {:#x}: {e}", live.addr())))?;
        if let Some(difference) = first_difference(&found, &live.image) {
            let size = live.size();
            let tail_trapped = self.arch.is_trap_filled(
                &found[size
                    .next_multiple_of(self.arch.instruction_alignment())
                    .min(found.len())..],
            );
            return Err(TestCaseError::fail(format!(
                "block {:#x} (size {size}, capacity {}, finalized {}): {difference}; \
                 tail trap-filled: {tail_trapped}",
                live.addr(),
                live.capacity(),
                live.finalized,
            )));
        }
        Ok(())
    }

    fn check_decommitted(&self, live: &Live) -> TestCaseResult {
        let pages = live.addr() - live.addr() % self.page..live.addr() + live.capacity();
        for page in pages.step_by(self.page) {
            prop_assert!(
                !self.committed(page),
                "page {:#x} of decommitted block {:#x} is committed",
                page,
                live.addr()
            );
        }
        Ok(())
    }

    /// Every page of a block (or committed heap page) outside a session: execute-read in
    /// the books, and as the strategy dictates in the page table.
    fn check_pages(&self, addr: usize, len: usize) -> TestCaseResult {
        let first = addr - addr % self.page;
        for page in (first..addr + len).step_by(self.page) {
            let books = self.heap.vm().query(page).map(|info| info.state);
            prop_assert_eq!(
                books,
                Ok(PageState::Committed(books_protection(self.strategy, false))),
                "page {:#x} in the books",
                page
            );
            if let Some(table) = self.heap.vm().os().page_protection(page) {
                prop_assert_eq!(
                    table,
                    sim_protection(self.strategy, false),
                    "page {:#x} in the page table",
                    page
                );
            }
        }
        Ok(())
    }

    /// `find` of every chunk freed so far agrees with the model, and those on pages the heap
    /// still holds (committed) and in no live block hold traps.
    fn check_freed(&self) -> TestCaseResult {
        let mut checked = BTreeSet::new();
        for &(addr, capacity) in &self.freed {
            for chunk in (addr..addr + capacity).step_by(CHUNK) {
                if !checked.insert(chunk) {
                    continue;
                }
                let found = self.heap.find(chunk);
                prop_assert_eq!(found, self.expected_find(chunk), "find({:#x})", chunk);
                let page = chunk - chunk % self.page;
                if found.is_some() || !self.committed(page) {
                    continue;
                }
                self.check_pages(page, self.page)?;
                let mut found = [0; CHUNK];
                self.heap
                    .vm()
                    .read(chunk, &mut found)
                    .map_err(|e| TestCaseError::fail(format!("reading {chunk:#x}: {e}")))?;
                prop_assert!(
                    self.arch.is_trap_filled(&found),
                    "freed chunk {:#x} (of block {:#x}+{:#x}) holds {:02x?}",
                    chunk,
                    addr,
                    capacity,
                    &found[..32]
                );
            }
        }
        Ok(())
    }

    fn finish(mut self) -> TestCaseResult {
        for live in std::mem::take(&mut self.live) {
            let (addr, capacity) = (live.addr(), live.capacity());
            prop_assert_eq!(
                self.heap.free(live.block),
                Ok(()),
                "final free of {:#x}",
                addr
            );
            self.freed.insert((addr, capacity));
        }
        self.check()?;
        let stats = self.heap.stats();
        prop_assert_eq!(stats.live_blocks, 0);
        prop_assert_eq!(stats.kept_blocks, 0, "kept blocks with no block live");
        let used = self.heap.page_allocator().stats().used_bytes;
        prop_assert!(
            used == stats.spare_pages * self.page + stats.kept_large_bytes
                && stats.spare_pages <= SPARE_PAGES,
            "{} bytes of pages still used with no block live, {} spare pages, {} bytes of kept large blocks",
            used,
            stats.spare_pages,
            stats.kept_large_bytes
        );
        Ok(())
    }
}

/// The error of asking for an entry point in write mode.
fn wrong_mode() -> Error {
    Error::Vm(codeheap::vm::Error::WrongThreadMode {
        required: ThreadMode::Execute,
        current: ThreadMode::Write,
    })
}

/// Calls the block after checking, by reading it back, that it holds `return value`.
fn call_verified<O: Inspect>(heap: &Heap<O>, block: &Block, value: u32) -> Result<u32, String> {
    let code = heap.arch().encode_return_u32(value);
    let mut found = vec![0; code.as_bytes().len()];
    heap.vm()
        .read(block.addr(), &mut found)
        .map_err(|e| e.to_string())?;
    if found != code.as_bytes() {
        return Err(format!("block {:#x} holds {found:02x?}", block.addr()));
    }
    // SAFETY: the block was just read back holding a complete `extern "C" fn() -> u32`
    // (`mov eax, imm32; ret` or `mov w0, ...; ret`), and `call` checks it is finalized
    // (flushed) before running it; the block lives until the call returns.
    let result = unsafe { heap.call(block) };
    result.map_err(|e| e.to_string())
}

// ---- runs ---------------------------------------------------------------------------------

fn run_model<O: Inspect>(
    name: &str,
    make: impl Fn() -> Heap<O>,
    config: ProptestConfig,
    ops: usize,
) {
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), ops * 3 / 4..=ops), |ops| {
        let heap = make();
        Driver::new(&heap).run(&ops)
    });
    if let Err(err) = result {
        panic!("{name}: {err}");
    }
}

fn sim(os: fn() -> SimOs, config: HeapConfig) -> impl Fn() -> Heap<SimOs> {
    move || Heap::with_config(os(), config).expect("a simulated heap")
}

#[test]
fn apple_map_jit() {
    let make = sim(SimOs::apple, HeapConfig::default());
    assert_eq!(make().strategy(), WxStrategy::MapJit);
    run_model("apple MapJit", make, sim_proptest_config(48, 1), 40);
}

#[test]
fn linux_dual_map() {
    let config = HeapConfig::with_strategy(WxStrategy::DualMap);
    run_model(
        "linux DualMap",
        sim(SimOs::linux, config),
        sim_proptest_config(48, 1),
        40,
    );
}

/// Every free straight back to its page, as ChakraCore does (the other models keep freed
/// small blocks for reuse, the default).
#[test]
fn linux_dual_map_keeping_nothing() {
    let config = HeapConfig {
        keep_freed_blocks: false,
        ..HeapConfig::with_strategy(WxStrategy::DualMap)
    };
    run_model(
        "linux DualMap, keeping no freed blocks",
        sim(SimOs::linux, config),
        sim_proptest_config(48, 1),
        40,
    );
}

#[test]
fn linux_protect() {
    let config = HeapConfig::with_strategy(WxStrategy::Protect);
    run_model(
        "linux Protect",
        sim(SimOs::linux, config),
        sim_proptest_config(48, 1),
        40,
    );
}

/// Every segment carved from a code range, and given back to it when released.
#[test]
fn linux_dual_map_in_a_code_range() {
    let config = HeapConfig {
        code_range: Some(CodeRangeConfig::new(16 << 20)),
        ..HeapConfig::with_strategy(WxStrategy::DualMap)
    };
    run_model(
        "linux DualMap in a code range",
        sim(SimOs::linux, config),
        sim_proptest_config(48, 1),
        40,
    );
}

#[test]
fn apple_map_jit_in_a_code_range() {
    let config = HeapConfig {
        code_range: Some(CodeRangeConfig::new(32 << 20)),
        ..HeapConfig::default()
    };
    run_model(
        "apple MapJit in a code range",
        sim(SimOs::apple, config),
        sim_proptest_config(48, 1),
        40,
    );
}

#[test]
fn apple_map_jit_chunk_classes() {
    let config = HeapConfig {
        size_classes: SizeClasses::Chunks,
        ..HeapConfig::default()
    };
    run_model(
        "apple MapJit, chunk classes",
        sim(SimOs::apple, config),
        sim_proptest_config(48, 1),
        40,
    );
}

#[test]
fn linux_protect_chunk_classes() {
    let config = HeapConfig {
        size_classes: SizeClasses::Chunks,
        ..HeapConfig::with_strategy(WxStrategy::Protect)
    };
    run_model(
        "linux Protect, chunk classes",
        sim(SimOs::linux, config),
        sim_proptest_config(48, 1),
        40,
    );
}

#[test]
fn linux_rwx() {
    let config = HeapConfig::with_strategy(WxStrategy::Rwx);
    run_model(
        "linux Rwx",
        sim(SimOs::linux, config),
        sim_proptest_config(48, 1),
        40,
    );
}

#[cfg(all(target_os = "linux", not(miri)))]
mod native {
    use super::*;
    use codeheap::NativeOs;
    use codeheap_test_support::proptest_config;

    fn run_native(strategy: WxStrategy) {
        let config = HeapConfig::with_strategy(strategy);
        let make = move || Heap::with_config(NativeOs::new(), config).expect("a native heap");
        run_model(
            &format!("native {strategy}"),
            make,
            proptest_config(12, 1),
            30,
        );
    }

    #[test]
    fn native_dual_map() {
        run_native(WxStrategy::DualMap);
    }

    #[test]
    fn native_protect() {
        run_native(WxStrategy::Protect);
    }
}
