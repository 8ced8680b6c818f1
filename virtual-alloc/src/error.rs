//! The one error type of the OS layer. Every public entry returns it; a failed call leaves
//! the mappings, the bookkeeping and the calling thread's write mode as they were.

use crate::os::SysCall;
use crate::protection::Protection;
use crate::sim::Fault;
use crate::strategy::WxStrategy;
use crate::write_mode::ThreadMode;

/// The kind of access a check was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Loading bytes.
    Read,
    /// Storing bytes.
    Write,
    /// Running the bytes as instructions.
    Execute,
}

/// Why a call into the OS layer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size of zero bytes (or pages) was asked for.
    #[error("size is zero")]
    ZeroSize,
    /// The size overflows the address space once rounded up to pages or granularity.
    #[error("size {size:#x} overflows the address space once rounded")]
    SizeOverflow {
        /// The size asked for.
        size: usize,
    },
    /// An address that must be aligned was not.
    #[error("address {addr:#x} is not aligned to {align:#x}")]
    Unaligned {
        /// The address given.
        addr: usize,
        /// The alignment it needs.
        align: usize,
    },
    /// The address lies in no region of this allocator.
    #[error("address {addr:#x} is not inside any region")]
    NotInRegion {
        /// The address given.
        addr: usize,
    },
    /// The range starts in a region but does not end in it.
    #[error("range {addr:#x}+{size:#x} does not lie within one region")]
    RangeOutsideRegion {
        /// Start of the range.
        addr: usize,
        /// Length of the range in bytes.
        size: usize,
    },
    /// A release was asked for an address that is inside a region but not its base.
    #[error("address {addr:#x} is not the base of a region")]
    NotRegionBase {
        /// The address given.
        addr: usize,
    },
    /// A region registration overlaps one already registered.
    #[error("range {base:#x}+{size:#x} overlaps a registered region")]
    RegionOverlap {
        /// Start of the new region.
        base: usize,
        /// Its size in bytes.
        size: usize,
    },
    /// The page is reserved but not committed.
    #[error("page {addr:#x} is not committed")]
    NotCommitted {
        /// The first page found uncommitted.
        addr: usize,
    },
    /// A protect call's expected old protection did not match (ChakraCore's ProtectPages
    /// check, which there is a fail-fast).
    #[error("page {addr:#x} has protection {found:?}, expected {expected:?}")]
    ProtectionMismatch {
        /// The first page whose protection differs.
        addr: usize,
        /// What the caller expected.
        expected: Protection,
        /// What the page has.
        found: Protection,
    },
    /// The page's protection does not allow the access (checked before touching memory, so
    /// a `Protect` region reports this instead of a segmentation fault).
    #[error("page {addr:#x} with protection {protection:?} does not allow {access:?}")]
    AccessDenied {
        /// The first page that refuses the access.
        addr: usize,
        /// Its protection.
        protection: Protection,
        /// The access asked for.
        access: Access,
    },
    /// Writable and executable at once was asked for on a region that keeps W^X.
    #[error("{protection:?} breaks W^X on a {strategy} region")]
    WxViolation {
        /// The region's strategy.
        strategy: WxStrategy,
        /// The protection asked for.
        protection: Protection,
    },
    /// The calling thread is in the wrong write/execute mode for this call.
    #[error("the calling thread is in {current:?} mode; this needs {required:?} mode")]
    WrongThreadMode {
        /// The mode the call needs.
        required: ThreadMode,
        /// The mode the thread is in.
        current: ThreadMode,
    },
    /// The strategy cannot be used on this OS.
    #[error("strategy {strategy} is not available here: {reason}")]
    StrategyUnavailable {
        /// The strategy asked for.
        strategy: WxStrategy,
        /// Why not.
        reason: &'static str,
    },
    /// `mmap(MAP_JIT)` was refused: without the `com.apple.security.cs.allow-jit`
    /// entitlement the hardened runtime refuses it.
    #[error("MAP_JIT mapping refused (errno {errno}); is the allow-jit entitlement present?")]
    MapJitRefused {
        /// The errno `mmap` set.
        errno: i32,
    },
    /// The process's one MAP_JIT region has no free range large enough: under the
    /// hardened runtime no second region can be mapped.
    #[error("the MAP_JIT region ({region:#x} bytes) has no free range of {requested:#x} bytes")]
    MapJitRegionFull {
        /// Bytes asked for.
        requested: usize,
        /// Size of the region.
        region: usize,
    },
    /// The allocator's code range has no free span large enough: every region of its
    /// strategy is carved from the range, so none is mapped outside it.
    #[error("the code range ({range:#x} bytes) has no free span of {requested:#x} bytes")]
    CodeRangeFull {
        /// Bytes asked for.
        requested: usize,
        /// Size of the code range.
        range: usize,
    },
    /// No place was found for a code range within call reach of the address it must be
    /// near (or the range alone is larger than the reach).
    #[error("no code range of {size:#x} bytes fits within call reach of {near:#x}")]
    CodeRangeOutOfReach {
        /// The address the range must be near.
        near: usize,
        /// Size of the range.
        size: usize,
    },
    /// The system call failed for lack of memory or address space (`ENOMEM`).
    #[error("{call} ran out of memory")]
    OutOfMemory {
        /// The system call that failed.
        call: SysCall,
    },
    /// The system call failed; `errno` is what it set.
    #[error("{call} failed with errno {errno}")]
    Os {
        /// The system call that failed.
        call: SysCall,
        /// The errno it set.
        errno: i32,
    },
    /// The simulated OS faulted, as the real machine would have.
    #[error("simulated fault: {0}")]
    Fault(#[from] Fault),
}

impl Error {
    /// The error for a system call that failed with `errno`: `OutOfMemory` for `ENOMEM`,
    /// `Os` otherwise.
    pub fn from_errno(call: SysCall, errno: i32) -> Error {
        if errno == libc::ENOMEM {
            Error::OutOfMemory { call }
        } else {
            Error::Os { call, errno }
        }
    }
}

/// The result type of the OS layer.
pub type Result<T, E = Error> = core::result::Result<T, E>;
