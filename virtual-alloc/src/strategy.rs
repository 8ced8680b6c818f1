//! The W^X strategies a region can be managed by.

/// How a region keeps write-xor-execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WxStrategy {
    /// macOS: one `mmap(MAP_JIT)` RWX mapping; each thread is either in write mode or in
    /// execute mode (`pthread_jit_write_protect_np`). Protect calls make no system call.
    MapJit,
    /// Linux: a memfd mapped twice, an executable view that runs and a writable view that is
    /// written. Protect calls make no system call.
    DualMap,
    /// Anywhere: pages flip between RW and RX with `mprotect`, as ChakraCore does. Other
    /// threads running code on a page being flipped fault: see the docs.
    Protect,
    /// Opt-in only: pages are RWX, no W^X at all (Windows ChakraCore's in-process mode).
    Rwx,
}

impl WxStrategy {
    /// Every strategy, for tests and tables.
    pub const ALL: [WxStrategy; 4] = [
        WxStrategy::MapJit,
        WxStrategy::DualMap,
        WxStrategy::Protect,
        WxStrategy::Rwx,
    ];

    /// Whether protect calls on this strategy's regions change the page tables.
    /// For `MapJit`, `DualMap` and `Rwx` they are counted no-ops.
    pub const fn protect_makes_syscall(self) -> bool {
        matches!(self, WxStrategy::Protect)
    }

    /// Whether the region is written through a second, writable view.
    pub const fn has_separate_write_view(self) -> bool {
        matches!(self, WxStrategy::DualMap)
    }

    /// A short lowercase name, for tables and logs.
    pub const fn name(self) -> &'static str {
        match self {
            WxStrategy::MapJit => "map-jit",
            WxStrategy::DualMap => "dual-map",
            WxStrategy::Protect => "protect",
            WxStrategy::Rwx => "rwx",
        }
    }
}

impl core::fmt::Display for WxStrategy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
