//! How a heap is set up.

use codeheap_page_allocator::PageAllocatorConfig;
use codeheap_virtual_alloc::WxStrategy;

/// Configuration of a [`Heap`](crate::Heap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapConfig {
    /// The W^X strategy; `None` picks the platform's default (MapJit on macOS, DualMap on
    /// Linux, Protect where memfd is refused).
    pub strategy: Option<WxStrategy>,
    /// Segment geometry and decommit policy of the pages underneath.
    pub pages: PageAllocatorConfig,
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
