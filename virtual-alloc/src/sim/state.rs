//! The simulator's page table and the system calls that change it.
//!
//! Every call is applied whole or not at all: arguments and every page are checked before
//! anything changes, as a failed system call changes nothing.

use std::collections::BTreeMap;

use super::fault::{Fault, FaultKind};
use super::memory::{FrameId, Frames, SharedObject};
use super::page_table::PageTable;
use super::rules::{MapJitSupport, SimRules};
use crate::error::{Access, Error, Result};
use crate::os::{JitRegion, SysCall};
use crate::protection::Protection;
use crate::word::Word;
use crate::write_mode::{ThreadMode, current_mode};

/// Where the simulator starts handing out addresses: page-aligned but deliberately not
/// 64 KiB-aligned, so callers that need granularity must over-allocate and trim.
const FIRST_ADDRESS: usize = 0x10_0000_0000 + 0x4000;
/// One past the highest address the simulator hands out (a 47-bit user address space).
const ADDRESS_LIMIT: usize = 1 << 47;
/// Most pages the simulator maps (and most pages a shared object holds): its page table
/// has an entry per page, so a larger reservation is refused with `ENOMEM` rather than
/// exhausting the host's memory. 4 GiB of 4 KiB pages, 16 GiB of 16 KiB pages.
const MAX_PAGES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backing {
    /// Anonymous memory; `None` until first written (reads as zero).
    Private(Option<FrameId>),
    /// Page `page` of shared object `fd`.
    Shared { fd: i32, page: usize },
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Pte {
    pub(super) protection: Protection,
    pub(super) jit: bool,
    pub(super) backing: Backing,
}

/// A failure planned by a test: the next matching system call fails with `errno`.
#[derive(Debug, Clone, Copy)]
pub(super) enum PlannedFailure {
    AfterCalls { remaining: u64, errno: i32 },
    NextOf { call: SysCall, errno: i32 },
}

#[derive(Debug)]
pub(super) struct SimState {
    pub(super) rules: SimRules,
    next_addr: usize,
    pub(super) pages: PageTable,
    pub(super) frames: Frames,
    pub(super) shared: BTreeMap<i32, SharedObject>,
    next_fd: i32,
    pub(super) calls: [u64; SysCall::ALL.len()],
    pub(super) planned: Vec<PlannedFailure>,
    pub(super) icache_flushes: u64,
    /// Whether the process has mapped its MAP_JIT region: the kernel's own record, kept
    /// apart from `jit_region` (codeheap's carving, taken out while it carves) so the
    /// one-region rule holds whatever the carving does.
    jit_mapped: bool,
    /// The process's MAP_JIT region and the ranges carved from it.
    pub(super) jit_region: JitRegion,
}

fn einval(call: SysCall) -> Error {
    Error::from_errno(call, libc::EINVAL)
}

impl SimState {
    pub(super) fn new(rules: SimRules) -> SimState {
        SimState {
            rules,
            next_addr: FIRST_ADDRESS,
            pages: PageTable::default(),
            frames: Frames::new(rules.page_size),
            shared: BTreeMap::new(),
            next_fd: 3,
            calls: [0; SysCall::ALL.len()],
            planned: Vec::new(),
            icache_flushes: 0,
            jit_mapped: false,
            jit_region: JitRegion::new(),
        }
    }

    fn page_size(&self) -> usize {
        self.rules.page_size
    }

    /// Counts a system call and fails it if a test planned so.
    pub(super) fn syscall(&mut self, call: SysCall) -> Result<()> {
        self.calls[call as usize] += 1;
        let mut failure = None;
        self.planned.retain_mut(|plan| match plan {
            PlannedFailure::AfterCalls {
                remaining: 0,
                errno,
            } if failure.is_none() => {
                failure = Some(*errno);
                false
            }
            // A second plan due at this call (or a plan due at a call that failed for
            // another plan) stays due: it fails the next call.
            PlannedFailure::AfterCalls { remaining, .. } => {
                *remaining = remaining.saturating_sub(1);
                true
            }
            PlannedFailure::NextOf {
                call: planned,
                errno,
            } if *planned == call && failure.is_none() => {
                failure = Some(*errno);
                false
            }
            PlannedFailure::NextOf { .. } => true,
        });
        match failure {
            Some(errno) => Err(Error::from_errno(call, errno)),
            None => Ok(()),
        }
    }

    /// The pages `addr..addr+len` covers, after checking alignment and length as `mmap`
    /// and friends do.
    fn page_span(&self, call: SysCall, addr: usize, len: usize) -> Result<core::ops::Range<usize>> {
        let size = self.page_size();
        if len == 0 || !addr.is_multiple_of(size) {
            return Err(einval(call));
        }
        let end = addr.checked_add(len).ok_or_else(|| einval(call))?;
        Ok(addr / size..end.div_ceil(size))
    }

    fn require_mapped(&self, call: SysCall, pages: &core::ops::Range<usize>) -> Result<()> {
        if pages.clone().all(|vpn| self.pages.contains(vpn)) {
            Ok(())
        } else {
            Err(Error::from_errno(call, libc::ENOMEM))
        }
    }

    /// Refuses to grow the page table past `MAX_PAGES`.
    fn room_for(&self, call: SysCall, pages: usize) -> Result<()> {
        match self.pages.len().checked_add(pages) {
            Some(total) if total <= MAX_PAGES => Ok(()),
            _ => Err(Error::from_errno(call, libc::ENOMEM)),
        }
    }

    fn fresh_range(&mut self, len: usize) -> Result<usize> {
        let addr = self.next_addr;
        let next = addr
            .checked_add(len)
            .and_then(|end| end.checked_add(self.page_size()))
            .filter(|&next| next <= ADDRESS_LIMIT)
            .ok_or(Error::OutOfMemory {
                call: SysCall::Mmap,
            })?;
        // A page of gap after each mapping, so neighbours never look contiguous.
        self.next_addr = next;
        Ok(addr)
    }

    fn drop_backing(&mut self, backing: Backing) {
        match backing {
            Backing::Private(Some(frame)) => self.frames.release(frame),
            Backing::Private(None) => {}
            Backing::Shared { fd, .. } => {
                let object = self.shared.get_mut(&fd).expect("mapped objects exist");
                object.mapped_pages -= 1;
                if object.is_dead() {
                    self.free_object(fd);
                }
            }
        }
    }

    fn free_object(&mut self, fd: i32) {
        if let Some(object) = self.shared.remove(&fd) {
            for frame in object.frames.into_iter().flatten() {
                self.frames.release(frame);
            }
        }
    }

    fn install(&mut self, vpn: usize, pte: Pte) {
        if let Some(old) = self.pages.insert(vpn, pte) {
            self.drop_backing(old.backing);
        }
    }

    pub(super) fn map_reserve(&mut self, len: usize) -> Result<usize> {
        self.syscall(SysCall::Mmap)?;
        let pages = self.page_span(SysCall::Mmap, 0, len)?;
        self.room_for(SysCall::Mmap, pages.len())?;
        let addr = self.fresh_range(len)?;
        let first = addr / self.page_size();
        for vpn in first..first + pages.len() {
            let pte = Pte {
                protection: Protection::NoAccess,
                jit: false,
                backing: Backing::Private(None),
            };
            self.pages.insert(vpn, pte);
        }
        Ok(addr)
    }

    /// `mmap(MAP_JIT)`: the hardened runtime maps one region per process and refuses a
    /// second. The region's pages enter the page table as ranges are carved from it
    /// ([`map_jit`](Self::map_jit)), not all at once: a region is hundreds of megabytes,
    /// and a page-table entry per page would make every simulated process pay for it.
    fn mmap_jit(&mut self, len: usize) -> Result<usize> {
        self.syscall(SysCall::Mmap)?;
        match self.rules.map_jit {
            MapJitSupport::Entitled if self.jit_mapped => {
                Err(Error::MapJitRefused { errno: libc::EPERM })
            }
            MapJitSupport::Entitled => {
                let pages = self.page_span(SysCall::Mmap, 0, len)?;
                self.room_for(SysCall::Mmap, pages.len())?;
                let addr = self.fresh_range(len)?;
                self.jit_mapped = true;
                Ok(addr)
            }
            MapJitSupport::NotEntitled => Err(Error::MapJitRefused { errno: libc::EPERM }),
            MapJitSupport::Unavailable => Err(einval(SysCall::Mmap)),
        }
    }

    /// A range of the MAP_JIT region (mapped by the first call), its pages read-write-
    /// execute in the page table as MAP_JIT pages are.
    pub(super) fn map_jit(&mut self, len: usize, align: usize) -> Result<usize> {
        let pages = self.page_span(SysCall::Mmap, 0, len)?;
        let mut region = core::mem::take(&mut self.jit_region);
        let size = self.rules.jit_region_size;
        let carved = region.carve(len, align, size, |size| self.mmap_jit(size));
        self.jit_region = region;
        let addr = carved?;
        let first = addr / self.page_size();
        let new = (first..first + pages.len())
            .filter(|&vpn| !self.pages.contains(vpn))
            .count();
        if let Err(err) = self.room_for(SysCall::Mmap, new) {
            self.jit_region.give_back(addr, len);
            return Err(err);
        }
        for vpn in first..first + pages.len() {
            self.pages.insert_if_absent(
                vpn,
                Pte {
                    protection: Protection::ExecuteReadWrite,
                    jit: true,
                    backing: Backing::Private(None),
                },
            );
        }
        Ok(addr)
    }

    /// Gives a carved range back to the MAP_JIT region, its memory dropped as
    /// `madvise(MADV_FREE_REUSABLE)` does; its pages stay mapped, as the region's.
    pub(super) fn unmap_jit(&mut self, addr: usize, len: usize) -> Result<()> {
        if !self.jit_region.is_handed_out(addr, len) {
            return Err(einval(SysCall::Munmap));
        }
        self.decommit_jit(addr, len)?;
        self.jit_region.give_back(addr, len);
        Ok(())
    }

    /// Pages mapped, but for the free ranges of the MAP_JIT region (mapped once and kept).
    pub(super) fn mapped_pages(&self) -> usize {
        let size = self.page_size();
        let idle: usize = (self.jit_region.free_ranges())
            .map(|(start, len)| self.pages.count_in(start / size..(start + len) / size))
            .sum();
        self.pages.len() - idle
    }

    pub(super) fn create_shared(&mut self, len: usize) -> Result<(i32, usize)> {
        self.syscall(SysCall::MemfdCreate)?;
        if !self.rules.shared_memory {
            return Err(Error::from_errno(SysCall::MemfdCreate, libc::ENOSYS));
        }
        let fd = self.next_fd;
        self.next_fd += 1;
        if let Err(err) = self.syscall(SysCall::Ftruncate) {
            // The descriptor is closed again, as the real implementation does.
            self.calls[SysCall::Close as usize] += 1;
            return Err(err);
        }
        let pages = len.div_ceil(self.page_size());
        if pages > MAX_PAGES {
            self.calls[SysCall::Close as usize] += 1;
            return Err(Error::from_errno(SysCall::Ftruncate, libc::ENOMEM));
        }
        self.shared.insert(fd, SharedObject::new(pages));
        Ok((fd, len))
    }

    pub(super) fn map_shared(
        &mut self,
        fd: i32,
        offset: usize,
        len: usize,
        protection: Protection,
        at: Option<usize>,
    ) -> Result<usize> {
        self.syscall(SysCall::Mmap)?;
        let size = self.page_size();
        let object_pages = match self.shared.get(&fd) {
            Some(object) if object.open => object.frames.len(),
            _ => return Err(Error::from_errno(SysCall::Mmap, libc::EBADF)),
        };
        let count = self.page_span(SysCall::Mmap, offset, len)?.len();
        if offset / size + count > object_pages {
            return Err(einval(SysCall::Mmap));
        }
        if protection.is_executable() && self.rules.exec_requires_map_jit {
            return Err(Error::from_errno(SysCall::Mmap, libc::EACCES));
        }
        if at.is_none() {
            self.room_for(SysCall::Mmap, count)?;
        }
        let addr = match at {
            Some(addr) => {
                self.page_span(SysCall::Mmap, addr, len)?;
                addr
            }
            None => self.fresh_range(len)?,
        };
        let first = addr / size;
        for i in 0..count {
            let backing = Backing::Shared {
                fd,
                page: offset / size + i,
            };
            self.shared
                .get_mut(&fd)
                .expect("checked above")
                .mapped_pages += 1;
            let pte = Pte {
                protection,
                jit: false,
                backing,
            };
            self.install(first + i, pte);
        }
        Ok(addr)
    }

    pub(super) fn unmap(&mut self, addr: usize, len: usize) -> Result<()> {
        self.syscall(SysCall::Munmap)?;
        for vpn in self.page_span(SysCall::Munmap, addr, len)? {
            if let Some(pte) = self.pages.remove(vpn) {
                self.drop_backing(pte.backing);
            }
        }
        Ok(())
    }

    pub(super) fn protect(
        &mut self,
        addr: usize,
        len: usize,
        protection: Protection,
    ) -> Result<()> {
        self.syscall(SysCall::Mprotect)?;
        let pages = self.page_span(SysCall::Mprotect, addr, len)?;
        self.require_mapped(SysCall::Mprotect, &pages)?;
        if pages
            .clone()
            .any(|vpn| self.pages.get(vpn).is_some_and(|pte| pte.jit))
        {
            // Apple: MAP_JIT pages cannot be mprotected, not even to PROT_NONE.
            return Err(Error::from_errno(SysCall::Mprotect, libc::EPERM));
        }
        if protection.is_executable() && self.rules.exec_requires_map_jit {
            // The hardened runtime: only MAP_JIT memory may hold generated code.
            return Err(Error::from_errno(SysCall::Mprotect, libc::EACCES));
        }
        for vpn in pages {
            self.pages.get_mut(vpn).expect("checked mapped").protection = protection;
        }
        Ok(())
    }

    pub(super) fn decommit_private(&mut self, addr: usize, len: usize) -> Result<()> {
        self.syscall(SysCall::Mmap)?;
        for vpn in self.page_span(SysCall::Mmap, addr, len)? {
            let pte = Pte {
                protection: Protection::NoAccess,
                jit: false,
                backing: Backing::Private(None),
            };
            self.install(vpn, pte);
        }
        Ok(())
    }

    fn jit_pages(&mut self, addr: usize, len: usize) -> Result<core::ops::Range<usize>> {
        self.syscall(SysCall::Madvise)?;
        let pages = self.page_span(SysCall::Madvise, addr, len)?;
        self.require_mapped(SysCall::Madvise, &pages)?;
        if pages
            .clone()
            .all(|vpn| self.pages.get(vpn).is_some_and(|pte| pte.jit))
        {
            Ok(pages)
        } else {
            Err(einval(SysCall::Madvise))
        }
    }

    pub(super) fn decommit_jit(&mut self, addr: usize, len: usize) -> Result<()> {
        for vpn in self.jit_pages(addr, len)? {
            let pte = self.pages.get_mut(vpn).expect("checked mapped");
            let old = core::mem::replace(&mut pte.backing, Backing::Private(None));
            self.drop_backing(old);
        }
        Ok(())
    }

    pub(super) fn recommit_jit(&mut self, addr: usize, len: usize) -> Result<()> {
        self.jit_pages(addr, len).map(drop)
    }

    pub(super) fn discard_shared(&mut self, fd: i32, offset: usize, len: usize) -> Result<()> {
        self.syscall(SysCall::Fallocate)?;
        let pages = self.page_span(SysCall::Fallocate, offset, len)?;
        let object = match self.shared.get_mut(&fd) {
            Some(object) if object.open => object,
            _ => return Err(Error::from_errno(SysCall::Fallocate, libc::EBADF)),
        };
        let end = pages.end.min(object.frames.len());
        let dropped: Vec<FrameId> = object.frames[pages.start.min(end)..end]
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for frame in dropped {
            self.frames.release(frame);
        }
        Ok(())
    }

    pub(super) fn close_shared(&mut self, fd: i32) -> Result<()> {
        self.syscall(SysCall::Close)?;
        match self.shared.get_mut(&fd) {
            Some(object) if object.open => {
                object.open = false;
                if object.is_dead() {
                    self.free_object(fd);
                }
                Ok(())
            }
            _ => Err(Error::from_errno(SysCall::Close, libc::EBADF)),
        }
    }

    // ---- memory access -------------------------------------------------------------------

    /// The frame holding page `vpn`, if it has one; with `allocate`, one is made.
    fn frame_of(&mut self, vpn: usize, allocate: bool) -> Option<FrameId> {
        let backing = self.pages.get(vpn)?.backing;
        match backing {
            Backing::Private(Some(frame)) => Some(frame),
            Backing::Private(None) if allocate => {
                let frame = self.frames.alloc();
                self.pages.get_mut(vpn).expect("present").backing = Backing::Private(Some(frame));
                Some(frame)
            }
            Backing::Private(None) => None,
            Backing::Shared { fd, page } => {
                let existing = self.shared.get(&fd).expect("mapped objects exist").frames[page];
                match existing {
                    Some(frame) => Some(frame),
                    None if allocate => {
                        let frame = self.frames.alloc();
                        self.shared.get_mut(&fd).expect("present").frames[page] = Some(frame);
                        Some(frame)
                    }
                    None => None,
                }
            }
        }
    }

    /// Checks that the calling thread may make `access` to every byte of the range.
    pub(super) fn check_access(
        &self,
        addr: usize,
        len: usize,
        access: Access,
    ) -> Result<(), Fault> {
        let size = self.page_size();
        let end = addr.checked_add(len).ok_or(Fault {
            addr,
            kind: FaultKind::Unmapped,
        })?;
        let mode = current_mode();
        let mut page_start = addr - addr % size;
        while page_start < end {
            let at = page_start.max(addr);
            let pte = self.pages.get(page_start / size).ok_or(Fault {
                addr: at,
                kind: FaultKind::Unmapped,
            })?;
            let kind = if pte.jit {
                match (access, mode) {
                    (Access::Write, ThreadMode::Execute) => Some(FaultKind::WriteInExecuteMode),
                    (Access::Execute, ThreadMode::Write) => Some(FaultKind::ExecuteInWriteMode),
                    _ => None,
                }
            } else if !pte.protection.allows(access) {
                Some(FaultKind::ProtectionViolation(access))
            } else {
                None
            };
            if let Some(kind) = kind {
                return Err(Fault { addr: at, kind });
            }
            page_start += size;
        }
        Ok(())
    }

    /// Applies `f(frame, offset_in_page, range_in_data)` to each page piece of the range.
    fn for_each_piece(
        &mut self,
        addr: usize,
        len: usize,
        allocate: bool,
        mut f: impl FnMut(&mut Frames, Option<FrameId>, usize, core::ops::Range<usize>),
    ) {
        let size = self.page_size();
        let mut done = 0;
        while done < len {
            let at = addr + done;
            let offset = at % size;
            let piece = (size - offset).min(len - done);
            let frame = self.frame_of(at / size, allocate);
            f(&mut self.frames, frame, offset, done..done + piece);
            done += piece;
        }
    }

    pub(super) fn write(&mut self, addr: usize, bytes: &[u8]) -> Result<()> {
        self.check_access(addr, bytes.len(), Access::Write)?;
        self.for_each_piece(addr, bytes.len(), true, |frames, frame, offset, range| {
            let frame = frames.get_mut(frame.expect("allocated"));
            frame.bytes[offset..offset + range.len()].copy_from_slice(&bytes[range.clone()]);
            frame.mark_stale(offset, range.len());
        });
        Ok(())
    }

    /// A store is one access, checked and made whole; unlike a plain write it leaves the
    /// icache's copy of its line in place until the next flush (see `Frame::held`), rather
    /// than making the line stale.
    pub(super) fn store(&mut self, addr: usize, word: Word) -> Result<()> {
        if !addr.is_multiple_of(word.len()) {
            return Err(Error::Unaligned {
                addr,
                align: word.len(),
            });
        }
        self.check_access(addr, word.len(), Access::Write)?;
        let (bytes, len) = word.to_bytes();
        let coherent = self.rules.icache_coherent;
        self.for_each_piece(addr, len, true, |frames, frame, offset, range| {
            let frame = frames.get_mut(frame.expect("allocated"));
            if !coherent {
                frame.hold_lines(offset, range.len());
            }
            frame.bytes[offset..offset + range.len()].copy_from_slice(&bytes[range]);
        });
        Ok(())
    }

    /// A write of what `fill_pattern` makes of `len` bytes: `pattern` repeated, a last
    /// partial repetition zeroed. Each page's piece is one copy, from a tile a page and a
    /// repetition long, at the piece's phase in the pattern: no buffer of the whole fill (a
    /// large block's is megabytes) and no pattern doubling per page, both slow under miri.
    pub(super) fn fill(&mut self, addr: usize, len: usize, pattern: &[u8]) -> Result<()> {
        self.check_access(addr, len, Access::Write)?;
        let period = pattern.len().max(1);
        // The bytes that hold whole repetitions; the rest (all of it, for no pattern) zeros.
        let repeated = if pattern.is_empty() {
            0
        } else {
            len / period * period
        };
        let tile = pattern.repeat(len.min(self.page_size()).div_ceil(period) + 1);
        self.for_each_piece(addr, len, true, |frames, frame, offset, range| {
            let frame = frames.get_mut(frame.expect("allocated"));
            let bytes = &mut frame.bytes[offset..offset + range.len()];
            let (body, tail) =
                bytes.split_at_mut(repeated.saturating_sub(range.start).min(range.len()));
            let phase = range.start % period;
            body.copy_from_slice(&tile[phase..phase + body.len()]);
            tail.fill(0);
            frame.mark_stale(offset, range.len());
        });
        Ok(())
    }

    pub(super) fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<()> {
        self.check_access(addr, buf.len(), Access::Read)?;
        self.for_each_piece(addr, buf.len(), false, |frames, frame, offset, range| {
            let out = &mut buf[range];
            match frame {
                Some(frame) => {
                    out.copy_from_slice(&frames.get(frame).bytes[offset..offset + out.len()])
                }
                None => out.fill(0),
            }
        });
        Ok(())
    }

    pub(super) fn flush_icache(&mut self, addr: usize, len: usize) -> Result<()> {
        self.check_access(addr, len, Access::Read)?;
        self.icache_flushes += 1;
        self.for_each_piece(addr, len, false, |frames, frame, offset, range| {
            if let Some(frame) = frame {
                frames.get_mut(frame).flush_lines(offset, range.len());
            }
        });
        Ok(())
    }

    /// Fetches `len` instruction bytes at `addr` as the calling thread's CPU would.
    pub(super) fn fetch(&mut self, addr: usize, len: usize) -> Result<Vec<u8>, Fault> {
        self.check_access(addr, len, Access::Execute)?;
        let mut bytes = vec![0; len];
        let coherent = self.rules.icache_coherent;
        let mut stale = false;
        self.for_each_piece(addr, len, false, |frames, frame, offset, range| {
            if let Some(frame) = frame {
                let frame = frames.get(frame);
                stale |= !coherent && frame.is_stale(offset, range.len());
                frame.fetch_into(offset, &mut bytes[range.clone()]);
            }
        });
        if stale {
            return Err(Fault {
                addr,
                kind: FaultKind::StaleInstruction,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill across pages, from anywhere in a page, is what `fill_pattern` makes of it.
    #[test]
    fn a_fill_across_pages_is_the_pattern_repeated() {
        let mut state = SimState::new(SimRules::linux());
        let page = state.page_size();
        let base = state.map_reserve(4 * page).unwrap();
        state
            .protect(base, 4 * page, Protection::ReadWrite)
            .unwrap();
        let patterns: [&[u8]; 4] = [&[], &[0xCC], &[1, 2, 3], &[0, 0, 0x20, 0xD4]];
        for pattern in patterns {
            for (start, len) in [(0, 4 * page), (5, page), (page - 2, 2 * page + 7), (1, 3)] {
                state.write(base, &vec![0xAA; 4 * page]).unwrap();
                state.fill(base + start, len, pattern).unwrap();
                let mut expected = vec![0xAA; 4 * page];
                crate::os::fill_pattern(&mut expected[start..start + len], pattern);
                let mut found = vec![0; 4 * page];
                state.read(base, &mut found).unwrap();
                // One comparison, not a loop over bytes (which miri would interpret).
                assert!(
                    found == expected,
                    "{pattern:?} at {start}, {len} bytes: byte {:?} differs",
                    found.iter().zip(&expected).position(|(a, b)| a != b)
                );
            }
        }
    }

    #[test]
    fn the_hardened_runtime_maps_one_map_jit_region() {
        let mut state = SimState::new(SimRules::apple());
        let first = state.map_jit(64 * 1024, 64 * 1024).unwrap();
        let second = state.map_jit(64 * 1024, 64 * 1024).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            state.calls[SysCall::Mmap as usize],
            1,
            "carving maps nothing more"
        );
        assert_eq!(
            state.mmap_jit(1 << 20),
            Err(Error::MapJitRefused { errno: libc::EPERM }),
            "a second region is refused"
        );
    }
}
