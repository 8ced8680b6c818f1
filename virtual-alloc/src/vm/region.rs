//! One reservation: its addresses, its strategy, and the state of each of its pages.

use crate::error::{Access, Error, Result};
use crate::os::SharedMemory;
use crate::protection::Protection;
use crate::strategy::WxStrategy;
use crate::sync::Mutex;

/// What a reservation is: where it runs, where it is written, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionInfo {
    /// First address of the region: where code runs from.
    pub base: usize,
    /// Length in bytes, a multiple of the page size.
    pub size: usize,
    /// Where the region is written: `base` except for `DualMap`, whose writable view lives
    /// elsewhere.
    pub write_base: usize,
    /// The strategy that manages the region.
    pub strategy: WxStrategy,
}

impl RegionInfo {
    /// One past the last address.
    pub const fn end(&self) -> usize {
        self.base + self.size
    }

    /// The address through which `addr` (in the region) is written.
    pub const fn write_address(&self, addr: usize) -> usize {
        self.write_base + (addr - self.base)
    }
}

/// The state of one page, as `VirtualQuery` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageState {
    /// `MEM_RESERVE`: address space only.
    Reserved,
    /// `MEM_COMMIT` with a protection.
    Committed(Protection),
}

#[derive(Debug)]
pub(crate) struct RegionState {
    pub(crate) released: bool,
    pub(crate) pages: Vec<PageState>,
    pub(crate) shared: Option<SharedMemory>,
}

/// A region and its page states. The lock is held for every check-then-act on the region
/// (including copying bytes in), so a release or protect on another thread cannot pull the
/// pages out from under a checked access.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) info: RegionInfo,
    pub(crate) page_size: usize,
    pub(crate) state: Mutex<RegionState>,
}

impl Region {
    pub(crate) fn new(info: RegionInfo, page_size: usize, shared: Option<SharedMemory>) -> Region {
        let state = RegionState {
            released: false,
            pages: vec![PageState::Reserved; info.size / page_size],
            shared,
        };
        Region {
            info,
            page_size,
            state: Mutex::new(state),
        }
    }

    /// Indices of the pages `addr..addr + size` touches (the range lies in the region).
    pub(crate) fn page_indices(&self, addr: usize, size: usize) -> core::ops::Range<usize> {
        let first = (addr - self.info.base) / self.page_size;
        let last = (addr + size - 1 - self.info.base) / self.page_size;
        first..last + 1
    }

    pub(crate) fn page_address(&self, index: usize) -> usize {
        self.info.base + index * self.page_size
    }
}

impl RegionState {
    /// `NotCommitted` for the first page of `pages` that is only reserved.
    pub(crate) fn require_committed(
        &self,
        region: &Region,
        pages: core::ops::Range<usize>,
    ) -> Result<()> {
        match pages
            .clone()
            .find(|&i| self.pages[i] == PageState::Reserved)
        {
            Some(i) => Err(Error::NotCommitted {
                addr: region.page_address(i),
            }),
            None => Ok(()),
        }
    }

    /// Checks that `access` is allowed on every page of `pages`: they are committed and, on
    /// `Protect` regions (the only ones whose page tables follow the protection), their
    /// protection allows it.
    pub(crate) fn require_access(
        &self,
        region: &Region,
        pages: core::ops::Range<usize>,
        access: Access,
    ) -> Result<()> {
        self.require_committed(region, pages.clone())?;
        if region.info.strategy != WxStrategy::Protect {
            return Ok(());
        }
        for i in pages {
            if let PageState::Committed(protection) = self.pages[i]
                && !protection.allows(access)
            {
                return Err(Error::AccessDenied {
                    addr: region.page_address(i),
                    protection,
                    access,
                });
            }
        }
        Ok(())
    }

    /// Pages of `pages` that are committed.
    pub(crate) fn committed_count(&self, pages: core::ops::Range<usize>) -> usize {
        self.pages[pages]
            .iter()
            .filter(|state| **state != PageState::Reserved)
            .count()
    }
}
