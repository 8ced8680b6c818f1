//! How a heap is set up.

use codeheap_page_allocator::PageAllocatorConfig;
use codeheap_virtual_alloc::{CodeRangeConfig, WxStrategy};

/// Configuration of a [`Heap`](crate::Heap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapConfig {
    /// The W^X strategy; `None` picks the platform's default (MapJit on macOS, DualMap on
    /// Linux, Protect where memfd is refused).
    pub strategy: Option<WxStrategy>,
    /// Segment geometry and decommit policy of the pages underneath.
    pub pages: PageAllocatorConfig,
    /// How small requests are rounded.
    pub size_classes: SizeClasses,
    /// Keep freed small blocks (up to 2 KiB) for the next allocation of the same size,
    /// which then takes one without page or bitmap work: a few KiB held for about a quarter
    /// of the instructions of a small alloc + free pair. A page is never kept alive by them.
    /// Freed large blocks too, up to 16 pages in all, for the next allocation of the same
    /// page count, which then makes no trip through the page allocator. On by default; off
    /// gives ChakraCore's behaviour (every free goes back to its page, or its pages back).
    pub keep_freed_blocks: bool,
    /// Address space to reserve up front as the heap's code range, every block then lying
    /// within it ([`VirtualAlloc::with_code_range`]): for code that calls other blocks with
    /// direct calls, which reach [`Arch::call_reach`](codeheap_virtual_alloc::Arch::call_reach)
    /// (2 GiB on x86-64, 128 MiB on aarch64), or, with [`CodeRangeConfig::near`], functions
    /// of the engine's own. `None` (the default) maps segments wherever the OS puts them. A
    /// heap whose range is full fails allocations that need a new segment with
    /// `CodeRangeFull`.
    ///
    /// [`VirtualAlloc::with_code_range`]: codeheap_virtual_alloc::VirtualAlloc::with_code_range
    pub code_range: Option<CodeRangeConfig>,
}

/// How a small request (up to a page) is rounded, and so how densely blocks pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeClasses {
    /// ChakraCore's rule: up to a power of two of 128-byte chunks (a 2,100-byte function
    /// takes 4 KiB). Every block of a page's bucket fits any free slot of it, so allocation
    /// takes the page's first free chunk.
    #[default]
    PowerOfTwo,
    /// Up to a whole number of 128-byte chunks (a 2,100-byte function takes 2,176 bytes):
    /// less memory for the same code. Pages are filed by the longest run of free chunks
    /// they have, and a request takes the page whose longest run fits it most tightly (best
    /// fit across pages, first fit within the page), at the price of recounting a page's
    /// longest run on every allocation and free.
    Chunks,
}

/// Empty pages the heap keeps as spares, committed, trap-filled and on no bucket, for the
/// next bucket that needs a page: a page emptied and needed again (a block of a page's
/// size, freed and allocated in turn) then makes no trip through the page allocator, whose
/// lock and free-run books cost about 200 instructions each way (the mixed W1: 308 ns per
/// step with one spare, 285 with 16, 286 with 64, 300 with 4). Beyond them empty pages go back.
/// ChakraCore's 64-bit heap never gives a small-block page back.
pub const SPARE_PAGES: usize = 16;

/// Free pages the heap's page allocator keeps committed by default. ChakraCore's code heap
/// keeps none, so a block freed and allocated again in a loop decommits and recommits its
/// page each time (a hole punched in the memfd, a TLB shootdown, page faults on the next
/// trap fill); 256 pages (1 MiB of 4 KiB pages, 4 MiB of Apple's 16 KiB pages) absorb that
/// churn. Kept pages hold traps.
pub const DEFAULT_FREE_PAGES: usize = 256;

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig {
            strategy: None,
            pages: PageAllocatorConfig {
                max_free_pages: DEFAULT_FREE_PAGES,
                ..PageAllocatorConfig::default()
            },
            size_classes: SizeClasses::PowerOfTwo,
            keep_freed_blocks: true,
            code_range: None,
        }
    }
}

impl HeapConfig {
    /// The default configuration with the given strategy.
    pub fn with_strategy(strategy: WxStrategy) -> HeapConfig {
        HeapConfig {
            strategy: Some(strategy),
            ..HeapConfig::default()
        }
    }
}
