//! Page-allocator operation sequences on the simulated OS, under any valid geometry and
//! decommit policy: page runs of every length (large segments included), with and without
//! secondary bytes, releases (whole, partial, of parked pages, bad), protect calls with the
//! right and a wrong expected protection, `decommit_pages`, `decommit_free_pages`,
//! secondary slots, and system calls failed on purpose. After every operation
//! `PageAllocator::check_invariants` must pass, the runs handed out must not overlap and
//! must be what `stats()` counts as used, and their pages must be committed (or, parked,
//! not) with the protection last set.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use codeheap_page_allocator::{Error, PageAllocator, PageAllocatorConfig, PageRun};
use codeheap_virtual_alloc::sim::{SimOs, SimRules};
use codeheap_virtual_alloc::{PageState, Protection, VirtualAlloc, WxStrategy};

use crate::ensure;

/// A structured fuzz input: the machine, the geometry, and the operations.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Apple rules (MapJit, 16 KiB pages) or Linux with one of its strategies.
    pub machine: u8,
    pub segment_pages: u8,
    pub secondary_pages: u8,
    /// log2 of the slot size.
    pub slot_shift: u8,
    pub max_free_pages: u8,
    pub ops: Vec<Op>,
}

/// One operation. `which` picks a live run or slot (modulo their number).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    Alloc {
        pages: u8,
    },
    AllocWithSecondary {
        pages: u8,
        bytes: u16,
    },
    /// Releases a live run whole, with `discard_pages` if `discard`.
    Release {
        which: u8,
        discard: bool,
    },
    /// Releases part of a run: allowed for segment runs, refused for large ones.
    ReleasePart {
        which: u8,
        skip: u8,
    },
    /// Releases an address that is no live run's start, or a count that is wrong.
    ReleaseBad {
        near: u8,
        offset: i32,
        pages: u8,
    },
    Protect {
        which: u8,
        to: Prot,
        expected_right: bool,
    },
    Decommit {
        which: u8,
    },
    DecommitFree,
    AllocSecondary {
        which: u8,
        bytes: u16,
    },
    ReleaseSecondary {
        which: u8,
    },
    ReleaseSecondaryBad {
        offset: i32,
    },
    /// Fails the next call of a system call that can fail on a real machine (see
    /// `crate::failing_call`), replacing any failure planned before.
    FailSyscall {
        call: u8,
    },
    ClearFailures,
}

/// Protections a caller may ask for (never RWX: refused outside `Rwx`).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Prot {
    ReadWrite,
    ExecuteRead,
    ReadOnly,
}

impl Prot {
    fn protection(self) -> Protection {
        match self {
            Prot::ReadWrite => Protection::ReadWrite,
            Prot::ExecuteRead => Protection::ExecuteRead,
            Prot::ReadOnly => Protection::ReadOnly,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    addr: usize,
    pages: usize,
    large: bool,
    /// The protection last set on every page; `None` once parked.
    protection: Option<Protection>,
}

struct Driver {
    pages: PageAllocator<SimOs>,
    page: usize,
    /// Live runs by address.
    runs: BTreeMap<usize, Run>,
    /// Live secondary slots by address.
    slots: Vec<usize>,
    failures_planned: bool,
}

/// Runs one input; `Err` describes the first violation. Inputs whose geometry the
/// allocator refuses are fine (it must refuse, not panic).
pub fn run(input: &Input) -> Result<(), String> {
    let Some(mut driver) = Driver::new(input)? else {
        return Ok(());
    };
    for (step, op) in input.ops.iter().enumerate() {
        driver
            .step(*op)
            .and_then(|()| driver.check())
            .map_err(|err| format!("step {step} ({op:?}): {err}"))?;
    }
    driver.finish()
}

impl Driver {
    fn new(input: &Input) -> Result<Option<Driver>, String> {
        let (rules, strategy) = match input.machine % 4 {
            0 => (SimRules::apple(), WxStrategy::MapJit),
            1 => (SimRules::linux(), WxStrategy::DualMap),
            2 => (SimRules::linux(), WxStrategy::Protect),
            _ => (SimRules::linux(), WxStrategy::Rwx),
        };
        let vm = VirtualAlloc::with_strategy(SimOs::new(rules), strategy)
            .map_err(|err| format!("setup: {err}"))?;
        let config = PageAllocatorConfig {
            segment_pages: usize::from(input.segment_pages % 66),
            secondary_pages: usize::from(input.secondary_pages % 4),
            secondary_slot_size: 1 << (input.slot_shift % 16),
            max_free_pages: usize::from(input.max_free_pages % 8),
        };
        let page = vm.page_size();
        match PageAllocator::new(vm, config) {
            Ok(pages) => Ok(Some(Driver {
                pages,
                page,
                runs: BTreeMap::new(),
                slots: Vec::new(),
                failures_planned: false,
            })),
            Err(Error::InvalidConfig { .. }) => Ok(None),
            Err(err) => Err(format!("a bad geometry gave {err}")),
        }
    }

    fn pick_run(&self, which: u8) -> Option<Run> {
        let n = self.runs.len();
        (n > 0).then(|| {
            *self
                .runs
                .values()
                .nth(usize::from(which) % n)
                .expect("in range")
        })
    }

    fn allowed(&self, what: &str, err: Error) -> Result<(), String> {
        ensure(self.failures_planned, || format!("{what} failed: {err}"))
    }

    fn took(&mut self, run: PageRun, pages: usize) -> Result<(), String> {
        ensure(
            run.pages == pages && run.addr.is_multiple_of(self.page),
            || format!("asked for {pages} pages, got {run:?}"),
        )?;
        let end = run.addr + pages * self.page;
        let overlap = self
            .runs
            .values()
            .find(|r| r.addr < end && run.addr < r.addr + r.pages * self.page);
        ensure(overlap.is_none(), || {
            format!("{run:?} overlaps the live run {overlap:?}")
        })?;
        let write_addr = self.pages.vm().writable_address(run.addr);
        ensure(write_addr == Ok(run.write_addr), || {
            format!("{run:?} is written at {write_addr:?}")
        })?;
        // Fresh pages come read-write; kept ones as they were released, and say so.
        let found = self.pages.vm().query(run.addr).map_err(|e| e.to_string())?;
        ensure(
            (!run.fresh || run.protection == Protection::ReadWrite)
                && found.state == PageState::Committed(run.protection)
                && found.size >= pages * self.page,
            || format!("{run:?} is not what the OS layer holds: {found:?}"),
        )?;
        self.runs.insert(
            run.addr,
            Run {
                addr: run.addr,
                pages,
                large: run.large,
                protection: Some(run.protection),
            },
        );
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Alloc { pages } => {
                let pages = usize::from(pages % 80);
                match self.pages.alloc_pages(pages) {
                    Ok(run) => self.took(run, pages),
                    Err(Error::ZeroPages) if pages == 0 => Ok(()),
                    Err(err) => self.allowed("alloc_pages", err),
                }
            }
            Op::AllocWithSecondary { pages, bytes } => {
                let pages = 1 + usize::from(pages % 40);
                match self
                    .pages
                    .alloc_pages_with_secondary(pages, usize::from(bytes))
                {
                    Ok((run, slot)) => {
                        ensure(
                            slot.segment == run.segment && slot.size >= usize::from(bytes),
                            || format!("{run:?} came with the slot {slot:?}"),
                        )?;
                        self.slots.push(slot.addr);
                        self.took(run, pages)
                    }
                    Err(
                        Error::ZeroPages
                        | Error::SecondaryTooLarge { .. }
                        | Error::SecondaryExhausted { .. },
                    ) => Ok(()),
                    Err(err) => self.allowed("alloc_pages_with_secondary", err),
                }
            }
            Op::Release { which, discard } => {
                let Some(run) = self.pick_run(which) else {
                    return Ok(());
                };
                let released = if discard {
                    self.pages.discard_pages(run.addr, run.pages)
                } else {
                    self.pages.release_pages(run.addr, run.pages)
                };
                match released {
                    Ok(()) => {
                        self.runs.remove(&run.addr);
                        Ok(())
                    }
                    Err(Error::SecondaryInUse { .. }) if run.large => Ok(()),
                    Err(err) => self.allowed("release_pages", err),
                }
            }
            Op::ReleasePart { which, skip } => {
                let Some(run) = self.pick_run(which) else {
                    return Ok(());
                };
                if run.pages < 2 {
                    return Ok(());
                }
                let skip = 1 + usize::from(skip) % (run.pages - 1);
                let at = run.addr + skip * self.page;
                match self.pages.release_pages(at, run.pages - skip) {
                    Ok(()) => {
                        ensure(!run.large, || {
                            "a large run was released in part".to_string()
                        })?;
                        let kept = self.runs.get_mut(&run.addr).expect("live");
                        kept.pages = skip;
                        Ok(())
                    }
                    Err(Error::PartialLargeRelease { .. }) if run.large => Ok(()),
                    Err(err) => self.allowed("release_pages of a part", err),
                }
            }
            Op::ReleaseBad {
                near,
                offset,
                pages,
            } => {
                let from = self.pick_run(near).map_or(0, |r| r.addr);
                let addr = from.wrapping_add(offset as isize as usize);
                let pages = usize::from(pages % 8);
                // Ranges touching a live run may be legitimate (part of one, or of two
                // neighbours); the others must be refused.
                let end = addr.saturating_add(pages * self.page);
                let touches = self
                    .runs
                    .values()
                    .any(|r| r.addr < end && addr < r.addr + r.pages * self.page);
                if touches {
                    return Ok(());
                }
                let before = self.pages.stats();
                let result = self.pages.release_pages(addr, pages);
                ensure(result.is_err(), || {
                    format!("releasing {pages} pages at {addr:#x}, not a live run, succeeded")
                })?;
                ensure(self.pages.stats() == before, || {
                    format!("a refused release ({result:?}) changed the statistics")
                })
            }
            Op::Protect {
                which,
                to,
                expected_right,
            } => {
                let Some(run) = self.pick_run(which) else {
                    return Ok(());
                };
                let Some(current) = run.protection else {
                    return Ok(());
                };
                let to = to.protection();
                let expected = if expected_right {
                    current
                } else if current == Protection::ReadOnly {
                    Protection::ExecuteRead
                } else {
                    Protection::ReadOnly
                };
                match self.pages.protect_pages(run.addr, run.pages, to, expected) {
                    Ok(()) => {
                        ensure(expected_right, || {
                            "a wrong expected protection passed".into()
                        })?;
                        self.runs.get_mut(&run.addr).expect("live").protection = Some(to);
                        Ok(())
                    }
                    Err(Error::Vm(codeheap_virtual_alloc::Error::ProtectionMismatch {
                        ..
                    })) if !expected_right => Ok(()),
                    Err(err) => self.allowed("protect_pages", err),
                }
            }
            Op::Decommit { which } => {
                let Some(run) = self.pick_run(which) else {
                    return Ok(());
                };
                match self.pages.decommit_pages(run.addr, run.pages) {
                    Ok(()) => {
                        self.runs.get_mut(&run.addr).expect("live").protection = None;
                        Ok(())
                    }
                    Err(err) => self.allowed("decommit_pages", err),
                }
            }
            Op::DecommitFree => match self.pages.decommit_free_pages() {
                Ok(_) => {
                    let free = self.pages.stats().free_bytes;
                    ensure(free == 0, || format!("{free} free bytes left committed"))
                }
                Err(err) => self.allowed("decommit_free_pages", err),
            },
            Op::AllocSecondary { which, bytes } => {
                let Some(run) = self.pick_run(which) else {
                    return Ok(());
                };
                match self
                    .pages
                    .alloc_secondary_bytes(run.addr, usize::from(bytes))
                {
                    Ok(slot) => {
                        ensure(!self.slots.contains(&slot.addr), || {
                            format!("slot {:#x} handed out twice", slot.addr)
                        })?;
                        self.slots.push(slot.addr);
                        Ok(())
                    }
                    Err(
                        Error::ZeroPages
                        | Error::SecondaryTooLarge { .. }
                        | Error::SecondaryExhausted { .. },
                    ) => Ok(()),
                    Err(err) => self.allowed("alloc_secondary_bytes", err),
                }
            }
            Op::ReleaseSecondary { which } => {
                if self.slots.is_empty() {
                    return Ok(());
                }
                let slot = self
                    .slots
                    .swap_remove(usize::from(which) % self.slots.len());
                self.pages
                    .release_secondary(slot)
                    .map_err(|err| format!("releasing slot {slot:#x}: {err}"))?;
                let again = self.pages.release_secondary(slot);
                ensure(matches!(again, Err(Error::NotASlot { .. })), || {
                    format!("a second release of slot {slot:#x} gave {again:?}")
                })
            }
            Op::ReleaseSecondaryBad { offset } => {
                let from = self.slots.first().copied().unwrap_or(0);
                let addr = from.wrapping_add(offset as isize as usize);
                if self.slots.contains(&addr) {
                    return Ok(());
                }
                let result = self.pages.release_secondary(addr);
                ensure(result.is_err(), || {
                    format!("releasing {addr:#x}, not a live slot, succeeded")
                })
            }
            Op::FailSyscall { call } => {
                // One planned failure at a time: a failure of the clean-up after a failure
                // is out of scope.
                let os = self.pages.vm().os();
                os.clear_failures();
                os.fail_next(crate::failing_call(call), libc::ENOMEM);
                self.failures_planned = true;
                Ok(())
            }
            Op::ClearFailures => {
                self.pages.vm().os().clear_failures();
                self.failures_planned = false;
                Ok(())
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        self.pages.check_invariants()?;
        let stats = self.pages.stats();
        let held: usize = self.runs.values().map(|r| r.pages).sum();
        ensure(stats.used_bytes == held * self.page, || {
            format!(
                "{} bytes used, the driver holds {held} pages",
                stats.used_bytes
            )
        })?;
        let parked: usize = self
            .runs
            .values()
            .filter(|r| r.protection.is_none())
            .map(|r| r.pages)
            .sum();
        ensure(stats.parked_bytes == parked * self.page, || {
            format!(
                "{} bytes parked, the driver parked {parked} pages",
                stats.parked_bytes
            )
        })?;
        for run in self.runs.values() {
            let expected = match run.protection {
                Some(protection) => PageState::Committed(protection),
                None => PageState::Reserved,
            };
            let states = (self.pages.vm())
                .query_range(run.addr, run.pages * self.page)
                .map_err(|err| format!("live run {:#x}: {err}", run.addr))?;
            for info in states {
                ensure(info.state == expected, || {
                    format!("page {:#x} is {:?}, expected {expected:?}", info.base, info.state)
                })?;
            }
        }
        Ok(())
    }

    /// Gives everything back; nothing may be left reserved.
    fn finish(mut self) -> Result<(), String> {
        self.pages.vm().os().clear_failures();
        for slot in std::mem::take(&mut self.slots) {
            self.pages
                .release_secondary(slot)
                .map_err(|err| format!("releasing slot {slot:#x} at the end: {err}"))?;
        }
        for run in std::mem::take(&mut self.runs).into_values() {
            self.pages
                .release_pages(run.addr, run.pages)
                .map_err(|err| format!("releasing {run:?} at the end: {err}"))?;
        }
        self.pages
            .decommit_free_pages()
            .map_err(|e| e.to_string())?;
        self.check()?;
        let regions = self.pages.vm().stats().regions;
        ensure(regions == 0, || {
            format!("{regions} regions left once everything was released")
        })
    }
}
