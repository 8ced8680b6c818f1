//! W3: what a long churn leaves behind. After `steps` W1 steps over a live set (each new
//! block written in full, as a JIT writes the code it allocated), how many bytes are
//! committed as executable memory and how much the process's PSS grew, over the bytes the
//! live blocks asked for.
//!
//! PSS, not RSS: a dual-mapped page is resident in both views and RSS would count it twice.
//! The growth is the whole process's, so it includes each allocator's bookkeeping. Run
//! each row in a process of its own so the numbers are the row's alone.

use std::mem::MaybeUninit;

use crate::code;
use crate::peers::Peer;
use crate::rows::RowVisitor;
use crate::sizes::{SizeStream, Sizes};

/// Live blocks in W3.
pub const LIVE: usize = 10_000;

/// W1 steps in W3.
pub const STEPS: u64 = 1_000_000;

/// PSS of this process, in bytes (`/proc/self/smaps_rollup`).
pub fn pss_bytes() -> usize {
    rollup_field("Pss:")
}

/// RSS of this process, in bytes.
pub fn rss_bytes() -> usize {
    rollup_field("Rss:")
}

fn rollup_field(field: &str) -> usize {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").expect("smaps_rollup");
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<usize>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no {field} in smaps_rollup"))
}

/// Bytes of this process's address space mapped executable (`/proc/self/maps`): the
/// allocator's committed code memory, once the baseline of the program's own text is taken
/// away. A dual-mapped region counts once (only its executable view is executable).
pub fn executable_bytes() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            if perms.as_bytes().get(2) != Some(&b'x') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some(end - start)
        })
        .sum()
}

/// One observation of the churn.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Steps done.
    pub step: u64,
    /// Bytes the live blocks asked for.
    pub live_bytes: usize,
    /// Growth of executable mappings since before the allocator existed.
    pub executable_bytes: usize,
    /// What the allocator says it committed, if it says (codeheap).
    pub own_committed: Option<usize>,
    /// What the allocator says the live blocks occupy after rounding, if it says.
    pub own_allocated: Option<usize>,
    /// Growth of PSS since before the allocator existed.
    pub pss_bytes: usize,
    /// Taken after the allocator gave back what it keeps without a live block
    /// ([`Peer::trim`]), after the last step.
    pub trimmed: bool,
}

impl Sample {
    /// The sample as one `key=value` line.
    pub fn line(&self) -> String {
        format!(
            "step={} live={} exec={} own={} alloc={} pss={} trimmed={}",
            self.step,
            self.live_bytes,
            self.executable_bytes,
            self.own_committed.map_or(-1, |bytes| bytes as i64),
            self.own_allocated.map_or(-1, |bytes| bytes as i64),
            self.pss_bytes,
            u8::from(self.trimmed)
        )
    }

    /// Parses [`line`](Sample::line).
    pub fn parse(line: &str) -> Option<Sample> {
        let mut sample = Sample::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair.split_once('=')?;
            match key {
                "step" => sample.step = value.parse().ok()?,
                "live" => sample.live_bytes = value.parse().ok()?,
                "exec" => sample.executable_bytes = value.parse().ok()?,
                "own" => {
                    let own: i64 = value.parse().ok()?;
                    sample.own_committed = usize::try_from(own).ok();
                }
                "alloc" => {
                    let alloc: i64 = value.parse().ok()?;
                    sample.own_allocated = usize::try_from(alloc).ok();
                }
                "pss" => sample.pss_bytes = value.parse().ok()?,
                "trimmed" => sample.trimmed = value == "1",
                _ => return None,
            }
        }
        Some(sample)
    }

    /// Committed (executable mappings) over live bytes.
    pub fn committed_ratio(&self) -> f64 {
        self.executable_bytes as f64 / self.live_bytes as f64
    }

    /// PSS growth over live bytes.
    pub fn pss_ratio(&self) -> f64 {
        self.pss_bytes as f64 / self.live_bytes as f64
    }
}

/// Runs W3 over the allocator it is given, calling `report` with a sample every
/// `every` steps and after the last, and one more after [`Peer::trim`] if the allocator
/// can trim.
#[derive(Debug)]
pub struct Churn<F> {
    /// Live blocks.
    pub live: usize,
    /// Steps.
    pub steps: u64,
    /// Steps between samples.
    pub every: u64,
    /// Gets each sample.
    pub report: F,
}

impl<F: FnMut(Sample)> RowVisitor for Churn<F> {
    type Output = ();

    fn visit<P: Peer + 'static>(mut self, peer: P) {
        // The baseline is taken with the peer made but empty: most allocators map nothing
        // until the first block. The harness's own vectors are touched before it, so only
        // the allocator's growth is counted.
        let mut blocks: Vec<MaybeUninit<(P::Block, usize)>> = Vec::with_capacity(self.live);
        blocks.resize_with(self.live, MaybeUninit::zeroed);
        let mut live: Vec<(P::Block, usize)> = Vec::with_capacity(self.live);
        live.spare_capacity_mut().fill_with(MaybeUninit::zeroed);
        drop(blocks);
        let mut buffer = code::returning(0, 64 * 1024);
        let (exec0, pss0) = (executable_bytes(), pss_bytes());

        let mut peer = peer;
        let mut sizes = SizeStream::new(Sizes::Mix);
        let mut live_bytes = 0;
        let mut new_block = |peer: &mut P, sizes: &mut SizeStream, counter: u32| {
            let size = sizes.next_size();
            let mut block = peer.alloc(size);
            code::write_returning(&mut buffer, counter);
            peer.emit(&mut block, &buffer[..size]);
            (block, size)
        };
        for i in 0..self.live {
            let (block, size) = new_block(&mut peer, &mut sizes, i as u32);
            live_bytes += size;
            live.push((block, size));
        }
        let sample = |peer: &P, step: u64, live_bytes: usize| Sample {
            step,
            live_bytes,
            executable_bytes: executable_bytes().saturating_sub(exec0),
            own_committed: peer.committed_bytes(),
            own_allocated: peer.allocated_bytes(),
            pss_bytes: pss_bytes().saturating_sub(pss0),
            trimmed: false,
        };
        (self.report)(sample(&peer, 0, live_bytes));
        for step in 1..=self.steps {
            let victim = sizes.rng().below(live.len());
            let (old, old_size) = live.swap_remove(victim);
            peer.free(old);
            let (block, size) = new_block(&mut peer, &mut sizes, step as u32);
            live_bytes = live_bytes - old_size + size;
            live.push((block, size));
            if step % self.every == 0 || step == self.steps {
                (self.report)(sample(&peer, step, live_bytes));
            }
        }
        if peer.trim() {
            (self.report)(Sample {
                trimmed: true,
                ..sample(&peer, self.steps, live_bytes)
            });
        }
    }
}
