//! The overlap check: a mixed-size churn that keeps a shadow map of live blocks (as asmjit's
//! own allocator test does) and checks that
//!
//! * no new block overlaps a live one, and
//! * every block still holds the bytes written into it when it is freed (so no other
//!   block's allocation, fill or free wrote over it).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::peers::Peer;
use crate::rows::RowVisitor;
use crate::sizes::{SizeStream, Sizes};

/// What the check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    /// Blocks allocated.
    pub allocs: u64,
    /// New blocks that overlapped a live one.
    pub overlaps: u64,
    /// Blocks whose bytes had changed by the time they were freed.
    pub corrupted: u64,
    /// The first overlap: the new block's address and size, the live block's.
    pub first_overlap: Option<(usize, usize, usize, usize)>,
    /// The step at which the allocator panicked, if it did (the check stops there).
    pub panicked_at: Option<u64>,
}

/// Runs the check for `steps` steps over `live` blocks.
#[derive(Debug, Clone, Copy)]
pub struct OverlapCheck {
    /// Live blocks.
    pub live: usize,
    /// Steps.
    pub steps: u64,
    /// Prints `PROGRESS <step>` every this many steps (0: never), so that if the allocator
    /// crashes the process, the step it reached is known.
    pub progress_every: u64,
}

/// The byte a block tagged `tag` holds at `offset`.
fn pattern(tag: u32, offset: usize) -> u8 {
    (tag.wrapping_mul(0x9E37_79B1) >> 24) as u8 ^ (offset as u8).wrapping_mul(31)
}

impl RowVisitor for OverlapCheck {
    type Output = Findings;

    fn visit<P: Peer + 'static>(self, mut peer: P) -> Findings {
        let mut sizes = SizeStream::new(Sizes::Mix);
        let mut found = Findings::default();
        // start -> (end, tag): the shadow of the live blocks, by address.
        let mut shadow: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
        let mut live: Vec<(P::Block, u32)> = Vec::with_capacity(self.live);
        let mut buffer = vec![0u8; 64 * 1024];
        let check_free = |peer: &mut P,
                          shadow: &mut BTreeMap<usize, (usize, u32)>,
                          found: &mut Findings,
                          block: P::Block,
                          tag: u32| {
            let (addr, size) = peer.span(&block);
            // SAFETY: the block is live and its `size` bytes are mapped readable (every
            // peer's executable view is readable).
            let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, size) };
            if bytes
                .iter()
                .enumerate()
                .any(|(offset, &byte)| byte != pattern(tag, offset))
            {
                found.corrupted += 1;
            }
            if shadow.get(&addr).is_some_and(|&(_, t)| t == tag) {
                shadow.remove(&addr);
            }
            peer.free(block);
        };
        for step in 0..self.live as u64 + self.steps {
            if self.progress_every > 0 && step % self.progress_every == 0 {
                println!(
                    "PROGRESS {step} overlaps={} corrupted={}",
                    found.overlaps, found.corrupted
                );
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                if live.len() == self.live {
                    let victim = sizes.rng().below(live.len());
                    let (block, tag) = live.swap_remove(victim);
                    check_free(&mut peer, &mut shadow, &mut found, block, tag);
                }
                let size = sizes.next_size();
                let tag = step as u32;
                let mut block = peer.alloc(size);
                let (addr, _) = peer.span(&block);
                let end = addr + size;
                let before = shadow.range(..end).next_back();
                if let Some((&start, &(live_end, _))) = before
                    && live_end > addr
                {
                    found.overlaps += 1;
                    found
                        .first_overlap
                        .get_or_insert((addr, size, start, live_end - start));
                }
                for (offset, byte) in buffer[..size].iter_mut().enumerate() {
                    *byte = pattern(tag, offset);
                }
                peer.emit(&mut block, &buffer[..size]);
                shadow.insert(addr, (end, tag));
                found.allocs += 1;
                live.push((block, tag));
            }));
            if outcome.is_err() {
                // The allocator's state is broken: leak it and its blocks.
                found.panicked_at = Some(step);
                core::mem::forget(live);
                core::mem::forget(peer);
                return found;
            }
        }
        for (block, tag) in live {
            check_free(&mut peer, &mut shadow, &mut found, block, tag);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::Bump;

    #[test]
    fn a_ring_too_small_is_caught() {
        // 1000 live blocks of ~2.5 KB on average cannot fit in a 256 KiB ring.
        let findings = OverlapCheck {
            live: 1000,
            steps: 2000,
            progress_every: 0,
        }
        .visit(Bump::with_len(256 * 1024));
        assert!(findings.overlaps > 0);
        assert!(findings.corrupted > 0);
    }

    #[test]
    fn a_ring_large_enough_is_clean() {
        let findings = OverlapCheck {
            live: 100,
            steps: 2000,
            progress_every: 0,
        }
        .visit(Bump::with_len(64 << 20));
        assert_eq!((findings.overlaps, findings.corrupted), (0, 0));
    }
}
