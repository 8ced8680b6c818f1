//! The region registry against a naive model: a `BTreeMap` of base → (size, value) that is
//! only ever searched linearly. Addresses come from a small space (so overlaps and
//! adjacency are common) and from near `usize::MAX` (so ends overflow); after every
//! operation every answer must equal the model's, errors included.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use codeheap_virtual_alloc::{Error, RegionRegistry, RegionSpan};

use crate::ensure;

/// A structured fuzz input: the operations.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub ops: Vec<Op>,
}

/// An address: `Small(n)` is `n * 0x40` (below 16 MiB), `High(n)` is `usize::MAX - n`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Small(u16),
    High(u16),
}

impl Addr {
    fn get(self) -> usize {
        match self {
            Addr::Small(n) => usize::from(n) * 0x40,
            Addr::High(n) => usize::MAX - usize::from(n),
        }
    }
}

/// One registry operation. Sizes are `size * 0x40 + extra` bytes.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    Register {
        base: Addr,
        size: u16,
        extra: u8,
    },
    Unregister {
        base: Addr,
    },
    /// Unregisters the `which`-th live region.
    UnregisterLive {
        which: u8,
    },
    Lookup {
        addr: Addr,
    },
    LookupRange {
        addr: Addr,
        size: u16,
    },
    Contains {
        addr: Addr,
    },
    Drain,
}

/// Regions by base: `(size, value)`.
#[derive(Debug, Default)]
struct Model {
    regions: BTreeMap<usize, (usize, u32)>,
}

impl Model {
    fn register(&mut self, base: usize, size: usize, value: u32) -> Result<(), Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let (start, end) = (base as u128, base as u128 + size as u128);
        if end > usize::MAX as u128 {
            return Err(Error::SizeOverflow { size });
        }
        let overlaps = self
            .regions
            .iter()
            .any(|(&b, &(s, _))| start < b as u128 + s as u128 && (b as u128) < end);
        if overlaps {
            return Err(Error::RegionOverlap { base, size });
        }
        self.regions.insert(base, (size, value));
        Ok(())
    }

    fn lookup(&self, addr: usize) -> Option<(RegionSpan, u32)> {
        self.regions.iter().find_map(|(&base, &(size, value))| {
            let inside = addr >= base && (addr - base) < size;
            inside.then_some((RegionSpan { base, size }, value))
        })
    }

    fn lookup_range(&self, addr: usize, size: usize) -> Result<(RegionSpan, u32), Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let (span, value) = self.lookup(addr).ok_or(Error::NotInRegion { addr })?;
        if addr as u128 + size as u128 <= span.base as u128 + span.size as u128 {
            Ok((span, value))
        } else {
            Err(Error::RangeOutsideRegion { addr, size })
        }
    }
}

/// Runs one input; `Err` describes the first disagreement.
pub fn run(input: &Input) -> Result<(), String> {
    let registry = RegionRegistry::new();
    let mut model = Model::default();
    for (step, op) in input.ops.iter().enumerate() {
        apply(&registry, &mut model, *op, step as u32)
            .and_then(|()| agree(&registry, &model))
            .map_err(|err| format!("step {step} ({op:?}): {err}"))?;
    }
    Ok(())
}

fn apply(
    registry: &RegionRegistry<u32>,
    model: &mut Model,
    op: Op,
    value: u32,
) -> Result<(), String> {
    match op {
        Op::Register { base, size, extra } => {
            let (base, size) = (base.get(), usize::from(size) * 0x40 + usize::from(extra));
            let got = registry.register(base, size, value);
            let want = model.register(base, size, value);
            ensure(got == want, || {
                format!("register({base:#x}, {size:#x}): {got:?}, model {want:?}")
            })
        }
        Op::Unregister { base } => unregister(registry, model, base.get()),
        Op::UnregisterLive { which } => {
            let n = model.regions.len();
            if n == 0 {
                return Ok(());
            }
            let base = *model
                .regions
                .keys()
                .nth(usize::from(which) % n)
                .expect("in range");
            unregister(registry, model, base)
        }
        Op::Lookup { addr } => {
            let addr = addr.get();
            let (got, want) = (registry.lookup(addr), model.lookup(addr));
            ensure(got == want, || {
                format!("lookup({addr:#x}): {got:?}, model {want:?}")
            })
        }
        Op::LookupRange { addr, size } => {
            let (addr, size) = (addr.get(), usize::from(size));
            let got = registry.lookup_range(addr, size);
            let want = model.lookup_range(addr, size);
            ensure(got == want, || {
                format!("lookup_range({addr:#x}, {size:#x}): {got:?}, model {want:?}")
            })
        }
        Op::Contains { addr } => {
            let addr = addr.get();
            let (got, want) = (registry.contains(addr), model.lookup(addr).is_some());
            ensure(got == want, || {
                format!("contains({addr:#x}): {got}, model {want}")
            })
        }
        Op::Drain => {
            let got = registry.drain();
            let want: Vec<(RegionSpan, u32)> = std::mem::take(&mut model.regions)
                .into_iter()
                .map(|(base, (size, value))| (RegionSpan { base, size }, value))
                .collect();
            ensure(got == want, || format!("drain: {got:?}, model {want:?}"))
        }
    }
}

fn unregister(
    registry: &RegionRegistry<u32>,
    model: &mut Model,
    base: usize,
) -> Result<(), String> {
    let got = registry.unregister(base);
    let want = model.regions.remove(&base).map(|(_, value)| value);
    ensure(got == want, || {
        format!("unregister({base:#x}): {got:?}, model {want:?}")
    })
}

/// Whole-state agreement: the count, and every region's first and last byte.
fn agree(registry: &RegionRegistry<u32>, model: &Model) -> Result<(), String> {
    ensure(registry.len() == model.regions.len(), || {
        format!("{} regions, model {}", registry.len(), model.regions.len())
    })?;
    ensure(registry.is_empty() == model.regions.is_empty(), || {
        "is_empty disagrees".to_string()
    })?;
    for (&base, &(size, value)) in &model.regions {
        let span = RegionSpan { base, size };
        for addr in [base, base + size - 1] {
            let got = registry.lookup(addr);
            ensure(got == Some((span, value)), || {
                format!("lookup({addr:#x}) of a live region: {got:?}")
            })?;
        }
    }
    Ok(())
}
