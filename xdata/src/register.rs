//! Handing entries to the system unwinder, and taking them back.
//!
//! Two unwinders, two meanings of `__register_frame`:
//! * **libgcc** (glibc Linux, what Rust's std unwinds with there): the argument starts an
//!   `.eh_frame` list, walked up to its zero terminator; one call registers the entry's CIE
//!   and FDE. Deregistration searches a list of registered objects from the newest, so
//!   tearing down many entries is fast only newest-first (wasmtime measured 3 s for 40k
//!   functions the other way).
//! * **libunwind** (macOS, and Linux builds against LLVM's libunwind): the argument is one
//!   FDE; its CIE is found through the FDE's CIE pointer.
//!
//! On Linux the choice is made at run time: LLVM's libunwind exports
//! `__unw_add_dynamic_fde`, libgcc does not. A registrar must get every entry deregistered
//! before its bytes or its code go away; the heap does that when a block is freed.

use codeheap_virtual_alloc::sync::{Mutex, lock};

/// An entry written to memory and ready for the unwinder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrittenEntry {
    /// Address of the entry's first byte (its CIE).
    pub addr: usize,
    /// Address of its FDE.
    pub fde: usize,
    /// First byte of the code it describes.
    pub pc: usize,
    /// Length of that code.
    pub len: usize,
}

impl WrittenEntry {
    /// Whether the code it describes holds `pc`.
    pub fn covers(&self, pc: usize) -> bool {
        pc >= self.pc && pc - self.pc < self.len
    }
}

/// Something that registers entries with an unwinder.
pub trait Registrar: Send + Sync + core::fmt::Debug {
    /// Makes the entry known to the unwinder.
    ///
    /// # Safety
    /// The entry's bytes must stay mapped, readable and unchanged, and its code mapped,
    /// until it is deregistered.
    unsafe fn register(&self, entry: WrittenEntry);

    /// Forgets an entry.
    ///
    /// # Safety
    /// `entry` was registered through this registrar and not deregistered since.
    unsafe fn deregister(&self, entry: WrittenEntry);
}

/// What `__register_frame` takes on this system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// libgcc: the start of an `.eh_frame` list (the entry's CIE).
    WholeList,
    /// libunwind: one FDE.
    SingleFde,
}

/// The process's own unwinder.
#[derive(Debug, Clone, Copy)]
pub struct SystemRegistrar {
    semantics: Semantics,
}

impl SystemRegistrar {
    /// The unwinder this process uses.
    pub fn new() -> SystemRegistrar {
        SystemRegistrar {
            semantics: system::semantics(),
        }
    }

    /// Which semantics `__register_frame` has here.
    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    fn argument(&self, entry: &WrittenEntry) -> *const u8 {
        match self.semantics {
            Semantics::WholeList => entry.addr as *const u8,
            Semantics::SingleFde => entry.fde as *const u8,
        }
    }
}

impl Default for SystemRegistrar {
    fn default() -> Self {
        SystemRegistrar::new()
    }
}

impl Registrar for SystemRegistrar {
    unsafe fn register(&self, entry: WrittenEntry) {
        // SAFETY: forwarded to the caller: the entry is a complete, readable `.eh_frame`
        // entry that outlives its registration.
        unsafe { system::register_frame(self.argument(&entry)) }
    }

    unsafe fn deregister(&self, entry: WrittenEntry) {
        // SAFETY: forwarded to the caller: the same argument was registered.
        unsafe { system::deregister_frame(self.argument(&entry)) }
    }
}

#[cfg(all(any(target_os = "linux", target_os = "macos"), not(miri)))]
mod system {
    use super::Semantics;

    unsafe extern "C" {
        fn __register_frame(begin: *const u8);
        fn __deregister_frame(begin: *const u8);
    }

    #[cfg(target_os = "macos")]
    pub(super) fn semantics() -> Semantics {
        Semantics::SingleFde
    }

    #[cfg(target_os = "linux")]
    pub(super) fn semantics() -> Semantics {
        // SAFETY: dlsym with a NUL-terminated name only looks the symbol up.
        let libunwind =
            unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__unw_add_dynamic_fde".as_ptr()) };
        if libunwind.is_null() {
            Semantics::WholeList
        } else {
            Semantics::SingleFde
        }
    }

    pub(super) unsafe fn register_frame(begin: *const u8) {
        // SAFETY: forwarded to the caller.
        unsafe { __register_frame(begin) }
    }

    pub(super) unsafe fn deregister_frame(begin: *const u8) {
        // SAFETY: forwarded to the caller.
        unsafe { __deregister_frame(begin) }
    }
}

#[cfg(not(all(any(target_os = "linux", target_os = "macos"), not(miri))))]
mod system {
    //! No system unwinder to talk to (miri, or an OS codeheap does not run natively on).
    use super::Semantics;

    pub(super) fn semantics() -> Semantics {
        Semantics::WholeList
    }

    pub(super) unsafe fn register_frame(_begin: *const u8) {}

    pub(super) unsafe fn deregister_frame(_begin: *const u8) {}
}

/// A registrar for the simulated OS, whose addresses mean nothing to the process: it keeps
/// the entries registered, so tests can ask which entry the unwinder would use for a pc,
/// and records every registration and deregistration in order.
#[derive(Debug, Default)]
pub struct RecordingRegistrar {
    live: Mutex<Vec<WrittenEntry>>,
    log: Mutex<Vec<(bool, WrittenEntry)>>,
}

impl RecordingRegistrar {
    /// An empty registry.
    pub fn new() -> RecordingRegistrar {
        RecordingRegistrar::default()
    }

    /// The registered entry covering `pc`, as an unwinder would find it.
    pub fn lookup(&self, pc: usize) -> Option<WrittenEntry> {
        let live = lock(&self.live);
        live.iter().rev().find(|entry| entry.covers(pc)).copied()
    }

    /// The entries registered now, oldest first.
    pub fn live(&self) -> Vec<WrittenEntry> {
        lock(&self.live).clone()
    }

    /// Every registration (`true`) and deregistration (`false`), in order.
    pub fn log(&self) -> Vec<(bool, WrittenEntry)> {
        lock(&self.log).clone()
    }
}

impl Registrar for RecordingRegistrar {
    unsafe fn register(&self, entry: WrittenEntry) {
        lock(&self.live).push(entry);
        lock(&self.log).push((true, entry));
    }

    unsafe fn deregister(&self, entry: WrittenEntry) {
        let mut live = lock(&self.live);
        if let Some(at) = live.iter().rposition(|e| *e == entry) {
            live.remove(at);
        }
        lock(&self.log).push((false, entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: usize, pc: usize, len: usize) -> WrittenEntry {
        WrittenEntry {
            addr,
            fde: addr + 24,
            pc,
            len,
        }
    }

    #[test]
    fn an_entry_covers_its_code_and_nothing_else() {
        let e = entry(0x9000, 0x1000, 0x40);
        assert!(e.covers(0x1000) && e.covers(0x103F));
        for outside in [0, 0xFFF, 0x1040, 0x2000, usize::MAX] {
            assert!(!e.covers(outside), "{outside:#x}");
        }
        assert!(!entry(0x9000, 0x1000, 0).covers(0x1000), "empty code");
    }

    /// What an unwinder would find: the newest registered entry covering the pc, and
    /// after its deregistration the one it hid.
    #[test]
    fn the_recording_registrar_finds_the_newest_covering_entry() {
        let registrar = RecordingRegistrar::new();
        let (old, new, apart) = (
            entry(0x9000, 0x1000, 0x100),
            entry(0x9040, 0x1080, 0x40),
            entry(0x9080, 0x4000, 0x10),
        );
        // SAFETY: a recording registrar reads nothing at the entries' addresses.
        unsafe {
            for e in [old, new, apart] {
                registrar.register(e);
            }
        }
        assert_eq!(registrar.lookup(0x1090), Some(new));
        assert_eq!(registrar.lookup(0x1010), Some(old));
        assert_eq!(registrar.lookup(0x4000), Some(apart));
        assert_eq!(registrar.lookup(0x3000), None);
        // SAFETY: as above; `new` was registered.
        unsafe { registrar.deregister(new) };
        assert_eq!(registrar.lookup(0x1090), Some(old));
        assert_eq!(registrar.live(), [old, apart]);
        assert_eq!(
            registrar.log(),
            [(true, old), (true, new), (true, apart), (false, new)]
        );
    }
}
