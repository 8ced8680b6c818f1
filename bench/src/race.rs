//! W4: one writer thread emits functions while one executor thread keeps calling the newest
//! published ones, which share pages with the function being written (the scenario that
//! breaks `mprotect`-based W^X). Run it in a child process: under `Protect` the executor is
//! expected to die.
//!
//! Functions are published in a ring of slots. The writer keeps `WINDOW` functions live and
//! frees older ones, but never the one the executor has announced it is about to call (a
//! hazard pointer), so a call never lands in freed memory.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use crate::code;
use crate::peers::Peer;
use crate::rows::RowVisitor;

/// Functions kept live by the writer.
pub const WINDOW: usize = 64;

/// Bytes per function: 256 bytes, 16 to a 4 KiB page, so the newest functions share the
/// page being written.
pub const BYTES: usize = 256;

/// Calls the executor makes to each function it picks, in the report's W4 table.
pub const CALLS_PER_PICK: u32 = 16;

/// Slots of the publication ring (a power of two, more than `WINDOW`).
const RING: usize = 256;

/// No function announced.
const NONE: u64 = u64::MAX;

/// What one run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RaceResult {
    /// Functions emitted (and published).
    pub emits: u64,
    /// Calls made by the executor.
    pub calls: u64,
    /// Calls that returned a wrong value.
    pub wrong: u64,
    /// Seconds the two threads ran together.
    pub seconds: f64,
}

impl RaceResult {
    /// The result as one `key=value` line.
    pub fn line(&self) -> String {
        format!(
            "emits={} calls={} wrong={} seconds={}",
            self.emits, self.calls, self.wrong, self.seconds
        )
    }

    /// Parses [`line`](RaceResult::line).
    pub fn parse(line: &str) -> Option<RaceResult> {
        let mut result = RaceResult::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair.split_once('=')?;
            match key {
                "emits" => result.emits = value.parse().ok()?,
                "calls" => result.calls = value.parse().ok()?,
                "wrong" => result.wrong = value.parse().ok()?,
                "seconds" => result.seconds = value.parse().ok()?,
                _ => return None,
            }
        }
        Some(result)
    }

    /// Emits per second.
    pub fn emits_per_second(&self) -> f64 {
        self.emits as f64 / self.seconds
    }

    /// Calls per second.
    pub fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    /// The median of several runs of one case by `rate` (the writer's emits, or the
    /// executor's calls, per second), with the wrong results of all the runs: a wrong
    /// call in any run must show.
    pub fn median(runs: &[RaceResult], rate: impl Fn(&RaceResult) -> f64) -> Option<RaceResult> {
        let mut sorted = runs.to_vec();
        sorted.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        let median = *sorted.get(sorted.len() / 2)?;
        Some(RaceResult {
            wrong: runs.iter().map(|run| run.wrong).sum(),
            ..median
        })
    }
}

/// The publication ring shared by the two threads.
struct Published {
    entries: [AtomicUsize; RING],
    values: [AtomicU64; RING],
    /// Sequence number of the newest published function, plus one (0: none yet).
    newest: AtomicU64,
    /// Functions with a sequence number below this may be freed at any moment.
    retired_below: AtomicU64,
    /// The sequence number the executor is calling, or `NONE`.
    hazard: AtomicU64,
    stop: AtomicBool,
}

impl Published {
    fn new() -> Published {
        Published {
            entries: core::array::from_fn(|_| AtomicUsize::new(0)),
            values: core::array::from_fn(|_| AtomicU64::new(0)),
            newest: AtomicU64::new(0),
            retired_below: AtomicU64::new(0),
            hazard: AtomicU64::new(NONE),
            stop: AtomicBool::new(false),
        }
    }

    fn publish(&self, seq: u64, entry: usize, value: u32) {
        let slot = seq as usize % RING;
        self.entries[slot].store(entry, SeqCst);
        self.values[slot].store(u64::from(value), SeqCst);
        self.newest.store(seq + 1, SeqCst);
    }

    /// Waits until the executor is not calling `seq`, after marking it retired.
    fn retire(&self, seq: u64) {
        self.retired_below.store(seq + 1, SeqCst);
        while self.hazard.load(SeqCst) == seq {
            core::hint::spin_loop();
        }
    }
}

/// The executor: calls the newest published function `calls_per_pick` times, then picks
/// the newest again, until stopped.
fn execute(published: &Published, calls_per_pick: u32) -> (u64, u64) {
    let (mut calls, mut wrong) = (0u64, 0u64);
    while !published.stop.load(SeqCst) {
        let newest = published.newest.load(SeqCst);
        if newest == 0 {
            core::hint::spin_loop();
            continue;
        }
        let seq = newest - 1;
        published.hazard.store(seq, SeqCst);
        if seq < published.retired_below.load(SeqCst) {
            published.hazard.store(NONE, SeqCst);
            continue;
        }
        let slot = seq as usize % RING;
        let entry = published.entries[slot].load(SeqCst);
        let value = published.values[slot].load(SeqCst);
        // A slot is reused only RING sequence numbers later, long after `seq` is retired,
        // which the hazard prevents while we hold it; so entry and value belong to `seq`.
        for _ in 0..calls_per_pick {
            // SAFETY: `seq` was published (its code written, made executable and flushed
            // before `newest` was stored) and is not retired, and the writer frees nothing
            // the hazard names; so the function stays until the hazard is cleared.
            let got = unsafe { code::call(entry) };
            calls += 1;
            if u64::from(got) != value {
                wrong += 1;
            }
        }
        published.hazard.store(NONE, SeqCst);
    }
    (calls, wrong)
}

/// What the writer thread does once `WINDOW` functions are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Keeps emitting: the workload.
    Emits,
    /// Sleeps: the executor's baseline, alone on the machine.
    Sleeps,
    /// Spins without writing: the executor's baseline with the other core busy, which
    /// separates what a second busy thread costs on this machine (a shared or loaded host)
    /// from what writing shared pages costs.
    Spins,
}

impl Writer {
    /// The name used on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Writer::Emits => "emits",
            Writer::Sleeps => "sleeps",
            Writer::Spins => "spins",
        }
    }

    /// The writer whose [`key`](Writer::key) is `key`.
    pub fn from_key(key: &str) -> Option<Writer> {
        [Writer::Emits, Writer::Sleeps, Writer::Spins]
            .into_iter()
            .find(|w| w.key() == key)
    }
}

/// Runs W4 for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct Race {
    /// How long the threads run together.
    pub duration: Duration,
    /// What the writer does meanwhile.
    pub writer: Writer,
    /// Calls the executor makes to each function before it picks the newest again: how
    /// often it takes up code the other thread has just written.
    pub calls_per_pick: u32,
}

impl RowVisitor for Race {
    type Output = RaceResult;

    fn visit<P: Peer + 'static>(self, mut peer: P) -> RaceResult {
        let published = Published::new();
        let mut live: std::collections::VecDeque<(P::Block, u64)> =
            std::collections::VecDeque::new();
        let mut buffer = code::returning(0, BYTES);
        let mut seq = 0u64;
        let mut emit = |peer: &mut P, live: &mut std::collections::VecDeque<_>, seq: &mut u64| {
            let value = (*seq as u32).wrapping_mul(2_654_435_761);
            code::write_returning(&mut buffer, value);
            let (block, entry) = peer.alloc_and_emit(&buffer);
            published.publish(*seq, entry, value);
            live.push_back((block, *seq));
            *seq += 1;
            if live.len() > WINDOW {
                let (oldest, old_seq) = live.pop_front().expect("non-empty");
                published.retire(old_seq);
                peer.free(oldest);
            }
        };
        for _ in 0..WINDOW {
            emit(&mut peer, &mut live, &mut seq);
        }
        let first = seq;
        thread::scope(|scope| {
            let executor = scope.spawn(|| execute(&published, self.calls_per_pick));
            let start = Instant::now();
            match self.writer {
                Writer::Emits => {
                    while start.elapsed() < self.duration {
                        for _ in 0..16 {
                            emit(&mut peer, &mut live, &mut seq);
                        }
                    }
                }
                Writer::Sleeps => thread::sleep(self.duration),
                Writer::Spins => {
                    while start.elapsed() < self.duration {
                        core::hint::spin_loop();
                    }
                }
            }
            published.stop.store(true, SeqCst);
            let seconds = start.elapsed().as_secs_f64();
            let (calls, wrong) = executor.join().expect("the executor survived");
            RaceResult {
                emits: seq - first,
                calls,
                wrong,
                seconds,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::Bump;

    #[test]
    fn the_median_run_carries_every_runs_wrong_calls() {
        let run = |emits: u64, wrong: u64| RaceResult {
            emits,
            calls: 1000 - emits,
            wrong,
            seconds: 1.0,
        };
        let runs = [run(30, 0), run(10, 2), run(20, 0)];
        let by_emits = RaceResult::median(&runs, RaceResult::emits_per_second).unwrap();
        assert_eq!(
            (by_emits.emits, by_emits.calls, by_emits.wrong),
            (20, 980, 2)
        );
        let by_calls = RaceResult::median(&runs[..2], RaceResult::calls_per_second).unwrap();
        assert_eq!(
            (by_calls.emits, by_calls.wrong),
            (10, 2),
            "the upper of two"
        );
        assert_eq!(RaceResult::median(&[], RaceResult::emits_per_second), None);
    }

    #[test]
    fn the_bump_floor_races_without_wrong_results() {
        let result = Race {
            duration: Duration::from_millis(100),
            writer: Writer::Emits,
            calls_per_pick: CALLS_PER_PICK,
        }
        .visit(Bump::with_len(64 << 20));
        assert!(result.emits > 0 && result.calls > 0, "{result:?}");
        assert_eq!(result.wrong, 0);
    }
}
