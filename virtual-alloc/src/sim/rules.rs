//! What the simulated OS allows: Apple Silicon's rules or Linux's.

use crate::arch::Arch;

/// Whether `mmap(MAP_JIT)` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapJitSupport {
    /// The OS has no MAP_JIT (Linux).
    Unavailable,
    /// MAP_JIT works: the binary carries `com.apple.security.cs.allow-jit`.
    Entitled,
    /// MAP_JIT exists but the entitlement is missing: every MAP_JIT `mmap` fails.
    NotEntitled,
}

/// The rules a [`SimOs`](super::SimOs) enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRules {
    /// Page size: a power of two of at least 4 KiB.
    pub page_size: usize,
    /// What the simulated CPU decodes when code is "run".
    pub arch: Arch,
    /// Whether MAP_JIT mappings can be made.
    pub map_jit: MapJitSupport,
    /// Bytes of the one MAP_JIT region a process may map (the hardened runtime refuses a
    /// second): what every MAP_JIT reservation is carved from.
    pub jit_region_size: usize,
    /// Whether memfd-style shared memory exists (for dual mapping).
    pub shared_memory: bool,
    /// The hardened runtime: executable protection on anything but MAP_JIT is refused.
    pub exec_requires_map_jit: bool,
    /// Whether instruction fetch sees stores without an icache flush (x86) or not (arm64).
    pub icache_coherent: bool,
}

impl SimRules {
    /// macOS on Apple Silicon under the hardened runtime with the allow-jit entitlement:
    /// 16 KiB pages, MAP_JIT with per-thread write/execute, no `mprotect` on MAP_JIT pages,
    /// no other executable memory, no memfd, an icache that must be flushed.
    pub const fn apple() -> SimRules {
        SimRules {
            page_size: 16 * 1024,
            arch: Arch::Aarch64,
            map_jit: MapJitSupport::Entitled,
            jit_region_size: 256 << 20,
            shared_memory: false,
            exec_requires_map_jit: true,
            icache_coherent: false,
        }
    }

    /// Linux on x86-64: 4 KiB pages, memfd, `mprotect` anywhere, coherent icache.
    pub const fn linux() -> SimRules {
        SimRules {
            page_size: 4096,
            arch: Arch::X86_64,
            map_jit: MapJitSupport::Unavailable,
            jit_region_size: 0,
            shared_memory: true,
            exec_requires_map_jit: false,
            icache_coherent: true,
        }
    }

    /// Linux on aarch64: as [`linux`](SimRules::linux), but code must be flushed.
    pub const fn linux_aarch64() -> SimRules {
        SimRules {
            arch: Arch::Aarch64,
            icache_coherent: false,
            ..SimRules::linux()
        }
    }

    /// The same rules without the allow-jit entitlement.
    pub const fn without_entitlement(self) -> SimRules {
        SimRules {
            map_jit: MapJitSupport::NotEntitled,
            ..self
        }
    }

    /// The same rules where creating shared memory is refused (a seccomp filter, say).
    pub const fn without_shared_memory(self) -> SimRules {
        SimRules {
            shared_memory: false,
            ..self
        }
    }

    /// The same rules without the hardened runtime: `mprotect` may make pages executable.
    pub const fn without_hardened_runtime(self) -> SimRules {
        SimRules {
            exec_requires_map_jit: false,
            ..self
        }
    }

    /// The same rules with a MAP_JIT region of `bytes` (a multiple of the page size).
    pub const fn with_jit_region_size(self, bytes: usize) -> SimRules {
        SimRules {
            jit_region_size: bytes,
            ..self
        }
    }

    /// The same rules with another page size (a power of two, at least 4 KiB).
    pub const fn with_page_size(self, page_size: usize) -> SimRules {
        SimRules { page_size, ..self }
    }
}
