//! The simulator's physical memory: page frames over ordinary heap memory, each with a
//! per-cache-line record of bytes written since the last icache flush (and, for lines
//! changed only by single stores, what the icache still holds of them), and memfd-style
//! shared objects whose frames two mappings can share.

use core::ops::Range;
use std::collections::BTreeMap;

/// Bytes per simulated cache line: the unit of icache staleness.
pub(super) const LINE: usize = 64;

pub(super) type FrameId = usize;

/// One physical page.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) bytes: Box<[u8]>,
    /// Lines written since the last flush.
    stale: LineBits,
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
            stale: LineBits::new(lines),
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
        self.stale.set(Frame::lines(offset, len));
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
        self.stale.clear(lines.clone());
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
        self.stale.any(Frame::lines(offset, len))
    }
}

/// One bit per line of a frame, changed and read a word at a time: a fill or flush of a
/// whole 16 KiB page touches four words rather than 256 bits, which matters under miri,
/// where every step of a loop is interpreted.
#[derive(Debug)]
struct LineBits(Box<[u64]>);

impl LineBits {
    fn new(lines: usize) -> LineBits {
        LineBits(vec![0; lines.div_ceil(64)].into_boxed_slice())
    }

    /// Each word `lines` touches, with the mask of its bits among them.
    fn words(lines: Range<usize>) -> impl Iterator<Item = (usize, u64)> {
        (lines.start / 64..lines.end.div_ceil(64)).map(move |word| {
            let base = word * 64;
            let low = lines.start.max(base) - base;
            let high = lines.end.min(base + 64) - base;
            let ones = u64::MAX
                .checked_shr((64 - (high - low)) as u32)
                .unwrap_or(0);
            (word, ones << low)
        })
    }

    fn set(&mut self, lines: Range<usize>) {
        for (word, mask) in LineBits::words(lines) {
            self.0[word] |= mask;
        }
    }

    fn clear(&mut self, lines: Range<usize>) {
        for (word, mask) in LineBits::words(lines) {
            self.0[word] &= !mask;
        }
    }

    fn any(&self, lines: Range<usize>) -> bool {
        LineBits::words(lines).any(|(word, mask)| self.0[word] & mask != 0)
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
    use super::{Frame, LINE, LineBits};

    /// Word-at-a-time ranges against a line-at-a-time model, across word seams.
    #[test]
    fn line_bits_set_clear_and_read_exactly_their_range() {
        let edges = [0, 1, 63, 64, 65, 127, 128, 200, 255, 256];
        for &start in &edges {
            for &end in edges.iter().filter(|&&end| end >= start) {
                let mut bits = LineBits::new(256);
                bits.set(start..end);
                let cut_start = (start + end) / 2;
                let cut_end = end.min(cut_start + 70);
                bits.clear(cut_start..cut_end);
                let mut model = [0u64; 4];
                for line in (start..end).filter(|line| !(cut_start..cut_end).contains(line)) {
                    model[line / 64] |= 1 << (line % 64);
                }
                assert_eq!(*bits.0, model, "{start}..{end} less {cut_start}..{cut_end}");
                let is_set = |line: usize| model[line / 64] & (1 << (line % 64)) != 0;
                let lines = start.saturating_sub(1)..(end + 1).min(256);
                assert_eq!(bits.any(lines.clone()), lines.clone().any(is_set));
                for line in [lines.start, start, cut_start, cut_end, end] {
                    if line < 256 {
                        assert_eq!(bits.any(line..line + 1), is_set(line), "line {line}");
                    }
                }
                assert!(!bits.any(start..start), "an empty range holds nothing");
            }
        }
    }

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
