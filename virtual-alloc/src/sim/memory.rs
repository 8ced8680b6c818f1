//! The simulator's physical memory: page frames over ordinary heap memory, each with a
//! per-cache-line record of bytes written since the last icache flush (and, for lines
//! changed only by single stores, what the icache still holds of them), and memfd-style
//! shared objects whose frames two mappings can share.

use core::ops::Range;
use std::collections::BTreeMap;

use crate::bitmap::BitVec;

/// Bytes per simulated cache line: the unit of icache staleness.
pub(super) const LINE: usize = 64;

pub(super) type FrameId = usize;

/// One physical page.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) bytes: Box<[u8]>,
    /// Lines written since the last flush, set and cleared a word at a time: a fill or flush
    /// of a whole 16 KiB page touches four words rather than 256 bits, which matters under
    /// miri, where every step of a loop is interpreted.
    stale: BitVec,
    /// Lines changed only by single aligned stores since the last flush, with the bytes the
    /// icache still holds for them. Hardware lets a core running such a line see the old
    /// word or the new until the flush; the simulator fetches the old, so a patch whose flush
    /// is missing shows as old code running, and a patch beside a running thread is no fault.
    held: BTreeMap<usize, [u8; LINE]>,
}

impl Frame {
    fn new(page_size: usize) -> Frame {
        let lines = page_size / LINE;
        Frame {
            bytes: vec![0; page_size].into_boxed_slice(),
            stale: BitVec::zeroed(lines),
            held: BTreeMap::new(),
        }
    }

    fn lines(offset: usize, len: usize) -> Range<usize> {
        if len == 0 {
            return 0..0;
        }
        offset / LINE..(offset + len - 1) / LINE + 1
    }

    pub(super) fn mark_stale(&mut self, offset: usize, len: usize) {
        let lines = Frame::lines(offset, len);
        self.stale.set_range(lines.start, lines.len());
    }

    /// Keeps what the icache holds for the lines a store is about to change: their bytes
    /// now, unless a line is stale (a plain write already changed it) or already held.
    pub(super) fn hold_lines(&mut self, offset: usize, len: usize) {
        for line in Frame::lines(offset, len) {
            if !self.is_stale(line * LINE, 1) {
                let start = line * LINE;
                let bytes = &self.bytes;
                self.held.entry(line).or_insert_with(|| {
                    let mut copy = [0; LINE];
                    copy.copy_from_slice(&bytes[start..start + LINE]);
                    copy
                });
            }
        }
    }

    /// An icache flush of the lines: fetches see their bytes from now on.
    pub(super) fn flush_lines(&mut self, offset: usize, len: usize) {
        let lines = Frame::lines(offset, len);
        self.stale.clear_range(lines.start, lines.len());
        if !self.held.is_empty() {
            self.held.retain(|line, _| !lines.contains(line));
        }
    }

    /// Copies the bytes at `offset` as an instruction fetch sees them: held lines as the
    /// icache holds them.
    pub(super) fn fetch_into(&self, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.bytes[offset..offset + out.len()]);
        for line in Frame::lines(offset, out.len()) {
            if let Some(copy) = self.held.get(&line) {
                let (start, end) = (
                    (line * LINE).max(offset),
                    ((line + 1) * LINE).min(offset + out.len()),
                );
                out[start - offset..end - offset]
                    .copy_from_slice(&copy[start - line * LINE..end - line * LINE]);
            }
        }
    }

    pub(super) fn is_stale(&self, offset: usize, len: usize) -> bool {
        let lines = Frame::lines(offset, len);
        self.stale.any_set(lines.start, lines.len())
    }
}

/// All frames, allocated on first write and recycled when freed.
#[derive(Debug)]
pub(super) struct Frames {
    page_size: usize,
    slots: Vec<Option<Frame>>,
    free: Vec<FrameId>,
}

impl Frames {
    pub(super) fn new(page_size: usize) -> Frames {
        Frames {
            page_size,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(super) fn alloc(&mut self) -> FrameId {
        let frame = Frame::new(self.page_size);
        match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(frame);
                id
            }
            None => {
                self.slots.push(Some(frame));
                self.slots.len() - 1
            }
        }
    }

    pub(super) fn release(&mut self, id: FrameId) {
        if self.slots[id].take().is_some() {
            self.free.push(id);
        }
    }

    pub(super) fn get(&self, id: FrameId) -> &Frame {
        self.slots[id]
            .as_ref()
            .expect("frame ids in page tables are live")
    }

    pub(super) fn get_mut(&mut self, id: FrameId) -> &mut Frame {
        self.slots[id]
            .as_mut()
            .expect("frame ids in page tables are live")
    }

    pub(super) fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// A memfd: pages of frames that live while the descriptor is open or a page is mapped.
#[derive(Debug)]
pub(super) struct SharedObject {
    pub(super) frames: Vec<Option<FrameId>>,
    pub(super) open: bool,
    pub(super) mapped_pages: usize,
}

impl SharedObject {
    pub(super) fn new(pages: usize) -> SharedObject {
        SharedObject {
            frames: vec![None; pages],
            open: true,
            mapped_pages: 0,
        }
    }

    pub(super) fn is_dead(&self) -> bool {
        !self.open && self.mapped_pages == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{Frame, LINE};

    #[test]
    fn a_fetch_sees_held_lines_as_they_were_and_the_rest_as_they_are() {
        let mut frame = Frame::new(4 * LINE);
        frame.bytes.fill(1);
        frame.hold_lines(LINE - 4, 4);
        frame.bytes[LINE - 4..LINE + 4].fill(2);
        let mut out = [0; 8];
        frame.fetch_into(LINE - 4, &mut out);
        assert_eq!(out, [1, 1, 1, 1, 2, 2, 2, 2], "line 0 held, line 1 not");
        frame.hold_lines(LINE, 4);
        frame.bytes[LINE..LINE + 4].fill(3);
        frame.fetch_into(LINE - 4, &mut out);
        assert_eq!(
            out,
            [1, 1, 1, 1, 2, 2, 2, 2],
            "the first store's bytes are held"
        );
        frame.flush_lines(0, 2 * LINE);
        frame.fetch_into(LINE - 4, &mut out);
        assert_eq!(out, [2, 2, 2, 2, 3, 3, 3, 3], "a flush shows memory");
    }

    #[test]
    fn a_stale_line_is_not_held() {
        let mut frame = Frame::new(2 * LINE);
        frame.mark_stale(0, 1);
        frame.hold_lines(0, 4);
        frame.bytes[..4].fill(9);
        let mut out = [0; 4];
        frame.fetch_into(0, &mut out);
        assert_eq!(
            out, [9; 4],
            "nothing held: the fetch of a stale line faults before this"
        );
        assert!(frame.is_stale(0, 4));
    }
}
