//! A simulated operating system that enforces Apple Silicon's (or Linux's) rules as errors.
//!
//! macOS cannot run on the project's machines, so this is how everything above the OS layer
//! is checked against it: unit tests, proptest, loom and fuzzing run on [`SimOs`]. It keeps
//! a page table (mapped, protection, MAP_JIT), physical frames over ordinary heap memory
//! (so it runs under miri and loom too), per-cache-line icache state, and reads each
//! thread's write/execute mode from [`current_mode`](crate::current_mode). It turns the
//! seeds' pitfalls into errors:
//!
//! * `mprotect` on a MAP_JIT page fails (`EPERM`);
//! * a store to a MAP_JIT page from a thread in execute mode faults;
//! * "running" MAP_JIT code from a thread in write mode faults;
//! * running bytes written since the last icache flush of their line is reported stale;
//! * MAP_JIT without the allow-jit entitlement fails, and so does a second MAP_JIT region
//!   (codeheap carves every MAP_JIT reservation from one, `JitRegion`);
//! * pages are 16 KiB, and addresses are handed out 16 KiB- but not 64 KiB-aligned;
//! * under the hardened runtime nothing but MAP_JIT memory can be made executable.
//!
//! "Running" code means decoding it with a tiny CPU (see `cpu.rs`) that knows the
//! instructions the tests emit, fetching every byte through the page table.
//!
//! Tests can plan failures of the next system calls to check that error paths leak nothing,
//! and can count the system calls made (a protect on a MAP_JIT region must make none).

mod cpu;
mod fault;
mod memory;
mod page_table;
mod rules;
mod state;

pub use fault::{Fault, FaultKind};
pub use rules::{MapJitSupport, SimRules};

use state::{PlannedFailure, SimState};

use crate::arch::Arch;
use crate::error::Result;
use crate::os::{Os, SharedMemory, SysCall};
use crate::protection::Protection;
use crate::sync::{Mutex, lock};
use crate::word::Word;

/// How many times each system call was made.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct SyscallCounts([u64; SysCall::ALL.len()]);

impl core::fmt::Debug for SyscallCounts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let made = SysCall::ALL.iter().filter(|call| self.get(**call) > 0);
        f.debug_map()
            .entries(made.map(|call| (call.name(), self.get(*call))))
            .finish()
    }
}

impl SyscallCounts {
    /// Calls made of `call`.
    pub fn get(&self, call: SysCall) -> u64 {
        self.0[call as usize]
    }

    /// Calls made in all.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The calls made since `earlier` was taken.
    pub fn since(&self, earlier: &SyscallCounts) -> SyscallCounts {
        SyscallCounts(core::array::from_fn(|i| self.0[i] - earlier.0[i]))
    }
}

/// The simulated operating system. See the [module documentation](self).
#[derive(Debug)]
pub struct SimOs {
    rules: SimRules,
    state: Mutex<SimState>,
}

impl SimOs {
    /// A fresh simulated machine following `rules`.
    ///
    /// # Panics
    /// If `rules.page_size` is not a power of two of at least 4 KiB: that is a bug in the
    /// test that built the rules, not an input.
    pub fn new(rules: SimRules) -> SimOs {
        assert!(
            rules.page_size.is_power_of_two() && rules.page_size >= 4096,
            "simulated page size must be a power of two of at least 4 KiB"
        );
        SimOs {
            rules,
            state: Mutex::new(SimState::new(rules)),
        }
    }

    /// macOS on Apple Silicon: see [`SimRules::apple`].
    pub fn apple() -> SimOs {
        SimOs::new(SimRules::apple())
    }

    /// Linux on x86-64: see [`SimRules::linux`].
    pub fn linux() -> SimOs {
        SimOs::new(SimRules::linux())
    }

    /// The rules this machine enforces.
    pub fn rules(&self) -> &SimRules {
        &self.rules
    }

    /// System calls made so far.
    pub fn syscalls(&self) -> SyscallCounts {
        SyscallCounts(lock(&self.state).calls)
    }

    /// Icache flushes made so far.
    pub fn icache_flushes(&self) -> u64 {
        lock(&self.state).icache_flushes
    }

    /// Pages mapped, of any kind, but for the free ranges of the MAP_JIT region (which is
    /// mapped once and kept, as the hardened runtime allows only one).
    pub fn mapped_pages(&self) -> usize {
        lock(&self.state).mapped_pages()
    }

    /// Whether the page holding `addr` is mapped.
    pub fn is_mapped(&self, addr: usize) -> bool {
        lock(&self.state)
            .pages
            .contains(addr / self.rules.page_size)
    }

    /// The page-table protection of the page holding `addr` (MAP_JIT pages report
    /// `ExecuteReadWrite`, as `vm_region` does on macOS).
    pub fn protection_at(&self, addr: usize) -> Option<Protection> {
        let state = lock(&self.state);
        let pte = state.pages.get(addr / self.rules.page_size)?;
        Some(pte.protection)
    }

    /// Whether the page holding `addr` is a MAP_JIT page.
    pub fn is_map_jit(&self, addr: usize) -> bool {
        let state = lock(&self.state);
        state
            .pages
            .get(addr / self.rules.page_size)
            .is_some_and(|pte| pte.jit)
    }

    /// Shared-memory objects alive (open, or closed but still mapped).
    pub fn shared_objects(&self) -> usize {
        lock(&self.state).shared.len()
    }

    /// Physical frames in use: pages that hold written data.
    pub fn resident_frames(&self) -> usize {
        lock(&self.state).frames.live()
    }

    /// Makes the system call `calls` calls from now fail with `errno` (0: the next one).
    pub fn fail_after(&self, calls: u64, errno: i32) {
        let plan = PlannedFailure::AfterCalls {
            remaining: calls,
            errno,
        };
        lock(&self.state).planned.push(plan);
    }

    /// Makes the next `call` fail with `errno`.
    pub fn fail_next(&self, call: SysCall, errno: i32) {
        lock(&self.state)
            .planned
            .push(PlannedFailure::NextOf { call, errno });
    }

    /// Drops every planned failure not yet triggered.
    pub fn clear_failures(&self) {
        lock(&self.state).planned.clear();
    }
}

// SAFETY: the simulator never touches process memory: its addresses index its own page
// table, and fresh ranges never overlap live ones.
unsafe impl Os for SimOs {
    fn page_size(&self) -> usize {
        self.rules.page_size
    }

    fn arch(&self) -> Arch {
        self.rules.arch
    }

    fn has_map_jit(&self) -> bool {
        self.rules.map_jit != MapJitSupport::Unavailable
    }

    fn is_simulated(&self) -> bool {
        true
    }

    fn map_reserve(&self, len: usize) -> Result<usize> {
        lock(&self.state).map_reserve(len)
    }

    fn map_jit(&self, len: usize, align: usize) -> Result<usize> {
        lock(&self.state).map_jit(len, align)
    }

    unsafe fn unmap_jit(&self, addr: usize, len: usize) -> Result<()> {
        lock(&self.state).unmap_jit(addr, len)
    }

    fn create_shared(&self, len: usize) -> Result<SharedMemory> {
        let (fd, len) = lock(&self.state).create_shared(len)?;
        Ok(SharedMemory::new(fd, len))
    }

    unsafe fn map_shared(
        &self,
        shared: &SharedMemory,
        offset: usize,
        len: usize,
        protection: Protection,
        at: Option<usize>,
    ) -> Result<usize> {
        lock(&self.state).map_shared(shared.fd(), offset, len, protection, at)
    }

    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<()> {
        lock(&self.state).unmap(addr, len)
    }

    unsafe fn protect(&self, addr: usize, len: usize, protection: Protection) -> Result<()> {
        lock(&self.state).protect(addr, len, protection)
    }

    unsafe fn decommit_private(&self, addr: usize, len: usize) -> Result<()> {
        lock(&self.state).decommit_private(addr, len)
    }

    unsafe fn decommit_jit(&self, addr: usize, len: usize) -> Result<()> {
        lock(&self.state).decommit_jit(addr, len)
    }

    unsafe fn recommit_jit(&self, addr: usize, len: usize) -> Result<()> {
        lock(&self.state).recommit_jit(addr, len)
    }

    fn discard_shared(&self, shared: &SharedMemory, offset: usize, len: usize) -> Result<()> {
        lock(&self.state).discard_shared(shared.fd(), offset, len)
    }

    fn close_shared(&self, shared: SharedMemory) -> Result<()> {
        lock(&self.state).close_shared(shared.fd())
    }

    unsafe fn flush_icache(&self, addr: usize, len: usize) -> Result<()> {
        lock(&self.state).flush_icache(addr, len)
    }

    unsafe fn write(&self, addr: usize, bytes: &[u8]) -> Result<()> {
        lock(&self.state).write(addr, bytes)
    }

    unsafe fn store(&self, addr: usize, word: Word) -> Result<()> {
        lock(&self.state).store(addr, word)
    }

    unsafe fn fill(&self, addr: usize, len: usize, pattern: &[u8]) -> Result<()> {
        lock(&self.state).fill(addr, len, pattern)
    }

    unsafe fn read(&self, addr: usize, buf: &mut [u8]) -> Result<()> {
        lock(&self.state).read(addr, buf)
    }

    /// Counted (and failed, if a failure is planned) as `membarrier`; the simulated CPU
    /// keeps no pipeline of fetched instructions to discard.
    fn sync_cores(&self) -> Result<()> {
        lock(&self.state).syscall(SysCall::Membarrier)
    }

    unsafe fn call(&self, entry: usize) -> Result<u32> {
        Ok(cpu::call(&mut lock(&self.state), entry)?)
    }
}
