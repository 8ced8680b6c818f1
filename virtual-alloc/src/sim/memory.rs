//! The simulator's physical memory: page frames over ordinary heap memory, each with a
//! per-cache-line record of bytes written since the last icache flush, and memfd-style
//! shared objects whose frames two mappings can share.

/// Bytes per simulated cache line: the unit of icache staleness.
pub(super) const LINE: usize = 64;

pub(super) type FrameId = usize;

/// One physical page.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) bytes: Box<[u8]>,
    /// One bit per line: written since the last flush.
    stale: Box<[u64]>,
}

impl Frame {
    fn new(page_size: usize) -> Frame {
        let lines = page_size / LINE;
        Frame {
            bytes: vec![0; page_size].into_boxed_slice(),
            stale: vec![0; lines.div_ceil(64)].into_boxed_slice(),
        }
    }

    fn lines(offset: usize, len: usize) -> core::ops::Range<usize> {
        if len == 0 {
            return 0..0;
        }
        offset / LINE..(offset + len - 1) / LINE + 1
    }

    pub(super) fn mark_stale(&mut self, offset: usize, len: usize) {
        for line in Frame::lines(offset, len) {
            self.stale[line / 64] |= 1 << (line % 64);
        }
    }

    pub(super) fn clear_stale(&mut self, offset: usize, len: usize) {
        for line in Frame::lines(offset, len) {
            self.stale[line / 64] &= !(1 << (line % 64));
        }
    }

    pub(super) fn is_stale(&self, offset: usize, len: usize) -> bool {
        Frame::lines(offset, len).any(|line| self.stale[line / 64] & (1 << (line % 64)) != 0)
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
