//! `RegionRegistry` against a naive model: a `BTreeMap` of base → (size, value) that is only
//! ever searched linearly, so none of the registry's ordered-map reasoning is reused.
//!
//! Addresses live in a small space (multiples of 0x80 below 0x10000 and a few near
//! `usize::MAX`) so overlaps, adjacency and edge hits happen all the time; sizes include
//! zero and sizes whose end overflows the address space. After every step every answer of
//! the registry must equal the model's, errors included.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Barrier;

use codeheap_virtual_alloc::{Error, RegionRegistry, RegionSpan};
use proptest::prelude::*;

// ---- the model -----------------------------------------------------------------------------

/// Regions by base: `(size, value)`. Searched linearly only.
#[derive(Debug, Default)]
struct Model {
    regions: BTreeMap<usize, (usize, u32)>,
}

/// `base..base + size` as `u128`s, so nothing here can overflow.
fn span128(base: usize, size: usize) -> (u128, u128) {
    (base as u128, base as u128 + size as u128)
}

impl Model {
    fn register(&mut self, base: usize, size: usize, value: u32) -> Result<(), Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let (start, end) = span128(base, size);
        if end > usize::MAX as u128 {
            return Err(Error::SizeOverflow { size });
        }
        let overlaps = self.regions.iter().any(|(&b, &(s, _))| {
            let (other_start, other_end) = span128(b, s);
            start < other_end && other_start < end
        });
        if overlaps {
            return Err(Error::RegionOverlap { base, size });
        }
        self.regions.insert(base, (size, value));
        Ok(())
    }

    fn unregister(&mut self, base: usize) -> Option<u32> {
        self.regions.remove(&base).map(|(_, value)| value)
    }

    fn lookup(&self, addr: usize) -> Option<(RegionSpan, u32)> {
        self.regions.iter().find_map(|(&base, &(size, value))| {
            let (start, end) = span128(base, size);
            let addr = addr as u128;
            (start <= addr && addr < end).then_some((RegionSpan { base, size }, value))
        })
    }

    fn lookup_range(&self, addr: usize, size: usize) -> Result<(RegionSpan, u32), Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let (span, value) = self.lookup(addr).ok_or(Error::NotInRegion { addr })?;
        let (_, end) = span128(addr, size);
        if end <= span128(span.base, span.size).1 {
            Ok((span, value))
        } else {
            Err(Error::RangeOutsideRegion { addr, size })
        }
    }

    /// The `index`-th region (modulo the count), if any.
    fn nth(&self, index: usize) -> Option<(usize, usize)> {
        let count = self.regions.len();
        (count > 0).then(|| {
            let (&base, &(size, _)) = self.regions.iter().nth(index % count).expect("in range");
            (base, size)
        })
    }

    /// The region after the `index`-th one (wrapping), if any.
    fn next_after(&self, index: usize) -> Option<(usize, usize)> {
        self.nth(index.wrapping_add(1))
    }
}

// ---- operations ----------------------------------------------------------------------------

/// An address: from the small space, or relative to a registered region's edges.
#[derive(Debug, Clone, Copy)]
enum Addr {
    Raw(usize),
    Edge { region: usize, edge: Edge },
}

#[derive(Debug, Clone, Copy)]
enum Edge {
    BeforeBase,
    Base,
    Middle,
    LastByte,
    End,
    AfterEnd,
}

/// A size: raw, or relative to the resolved address and a registered region.
#[derive(Debug, Clone, Copy)]
enum Size {
    Raw(usize),
    /// Up to the end of the region holding (or nearest to) the address, plus `delta`.
    ToEnd {
        region: usize,
        delta: i8,
    },
    /// Up to the end of the region after `region`: spans adjacent regions.
    ToNextEnd {
        region: usize,
    },
    /// Exactly up to the next region's base: fills a gap, adjacent on both sides.
    ToNextBase {
        region: usize,
    },
    /// So large that `addr + size` overflows by `excess + 1`.
    Overflowing {
        excess: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Register { base: Addr, size: Size, value: u32 },
    Unregister { base: Addr },
    Lookup { addr: Addr },
    LookupRange { addr: Addr, size: Size },
    Contains { addr: Addr },
    Len,
}

fn raw_address() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => (0..0x200usize).prop_map(|i| i * 0x80),
        1 => 0..0x10000usize,
        2 => (0..0x400usize).prop_map(|k| usize::MAX - k),
        1 => (0..8usize).prop_map(|i| (usize::MAX & !0xff) - i * 0x100),
    ]
}

fn raw_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        6 => (1..0x10usize).prop_map(|i| i * 0x100),
        2 => 1..0x400usize,
        1 => Just(usize::MAX),
        1 => (0..0x400usize).prop_map(|k| usize::MAX - k),
    ]
}

fn addr() -> impl Strategy<Value = Addr> {
    let edge = prop_oneof![
        Just(Edge::BeforeBase),
        Just(Edge::Base),
        Just(Edge::Middle),
        Just(Edge::LastByte),
        Just(Edge::End),
        Just(Edge::AfterEnd),
    ];
    prop_oneof![
        2 => raw_address().prop_map(Addr::Raw),
        3 => (0..16usize, edge).prop_map(|(region, edge)| Addr::Edge { region, edge }),
    ]
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        4 => raw_size().prop_map(Size::Raw),
        2 => (0..16usize, -1i8..=1).prop_map(|(region, delta)| Size::ToEnd { region, delta }),
        1 => (0..16usize).prop_map(|region| Size::ToNextEnd { region }),
        1 => (0..16usize).prop_map(|region| Size::ToNextBase { region }),
        1 => (0..4usize).prop_map(|excess| Size::Overflowing { excess }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (addr(), size(), any::<u32>())
            .prop_map(|(base, size, value)| Op::Register { base, size, value }),
        2 => addr().prop_map(|base| Op::Unregister { base }),
        3 => addr().prop_map(|addr| Op::Lookup { addr }),
        3 => (addr(), size()).prop_map(|(addr, size)| Op::LookupRange { addr, size }),
        1 => addr().prop_map(|addr| Op::Contains { addr }),
        1 => Just(Op::Len),
    ]
}

impl Model {
    fn resolve_addr(&self, addr: Addr) -> usize {
        match addr {
            Addr::Raw(addr) => addr,
            Addr::Edge { region, edge } => {
                let Some((base, size)) = self.nth(region) else {
                    return region * 0x100;
                };
                match edge {
                    Edge::BeforeBase => base.wrapping_sub(1),
                    Edge::Base => base,
                    Edge::Middle => base + size / 2,
                    Edge::LastByte => base + (size - 1),
                    Edge::End => base.wrapping_add(size),
                    Edge::AfterEnd => base.wrapping_add(size).wrapping_add(1),
                }
            }
        }
    }

    fn resolve_size(&self, addr: usize, size: Size) -> usize {
        match size {
            Size::Raw(size) => size,
            Size::ToEnd { region, delta } => {
                let end = match self.lookup(addr) {
                    Some((span, _)) => span.base.wrapping_add(span.size),
                    None => self.nth(region).map_or(addr, |(b, s)| b.wrapping_add(s)),
                };
                end.wrapping_sub(addr)
                    .wrapping_add_signed(isize::from(delta))
            }
            Size::ToNextEnd { region } => match self.next_after(region) {
                Some((b, s)) => b.wrapping_add(s).wrapping_sub(addr),
                None => 0x100,
            },
            Size::ToNextBase { region } => match self.next_after(region) {
                Some((b, _)) => b.wrapping_sub(addr),
                None => 0x100,
            },
            Size::Overflowing { excess } => (usize::MAX - addr).wrapping_add(2 + excess),
        }
    }
}

/// Every answer of `registry` about the model's regions and their edges agrees.
fn check_agrees(registry: &RegionRegistry<u32>, model: &Model) {
    assert_eq!(registry.len(), model.regions.len());
    assert_eq!(registry.is_empty(), model.regions.is_empty());
    for (&base, &(size, _)) in &model.regions {
        let end = base + size;
        let probes = [base.wrapping_sub(1), base, base + size / 2, end - 1, end];
        for addr in probes {
            assert_eq!(
                registry.lookup(addr),
                model.lookup(addr),
                "lookup({addr:#x})"
            );
            assert_eq!(
                registry.contains(addr),
                model.lookup(addr).is_some(),
                "contains({addr:#x})"
            );
        }
        assert_eq!(
            registry.lookup_range(base, size),
            model.lookup_range(base, size),
            "the whole region {base:#x}+{size:#x}"
        );
    }
}

fn run_ops(ops: &[Op]) {
    let registry = RegionRegistry::<u32>::new();
    let mut model = Model::default();
    for (step, &op) in ops.iter().enumerate() {
        match op {
            Op::Register { base, size, value } => {
                let base = model.resolve_addr(base);
                let size = model.resolve_size(base, size);
                let expected = model.register(base, size, value);
                let got = registry.register(base, size, value);
                assert_eq!(got, expected, "step {step}: register({base:#x}, {size:#x})");
            }
            Op::Unregister { base } => {
                let base = model.resolve_addr(base);
                let expected = model.unregister(base);
                assert_eq!(
                    registry.unregister(base),
                    expected,
                    "step {step}: unregister({base:#x})"
                );
            }
            Op::Lookup { addr } => {
                let addr = model.resolve_addr(addr);
                assert_eq!(
                    registry.lookup(addr),
                    model.lookup(addr),
                    "step {step}: lookup({addr:#x})"
                );
            }
            Op::LookupRange { addr, size } => {
                let addr = model.resolve_addr(addr);
                let size = model.resolve_size(addr, size);
                assert_eq!(
                    registry.lookup_range(addr, size),
                    model.lookup_range(addr, size),
                    "step {step}: lookup_range({addr:#x}, {size:#x})"
                );
            }
            Op::Contains { addr } => {
                let addr = model.resolve_addr(addr);
                assert_eq!(
                    registry.contains(addr),
                    model.lookup(addr).is_some(),
                    "step {step}: contains({addr:#x})"
                );
            }
            Op::Len => assert_eq!(registry.len(), model.regions.len(), "step {step}: len"),
        }
        check_agrees(&registry, &model);
    }
    let drained: Vec<(RegionSpan, u32)> = registry.drain();
    let expected: Vec<(RegionSpan, u32)> = model
        .regions
        .iter()
        .map(|(&base, &(size, value))| (RegionSpan { base, size }, value))
        .collect();
    assert_eq!(
        drained, expected,
        "drain returns every region in address order"
    );
    assert!(registry.is_empty());
}

proptest! {
    #![proptest_config(codeheap_test_support::proptest_config(256, 4))]

    #[test]
    fn registry_matches_a_naive_model(ops in prop::collection::vec(op(), 1..80)) {
        run_ops(&ops);
    }
}

/// Edge cases the random runs hit only by luck, pinned.
#[test]
fn registry_edge_cases() {
    use Addr::Raw;
    let reg = |base, size, value| Op::Register {
        base: Raw(base),
        size: Size::Raw(size),
        value,
    };
    let range = |addr, size| Op::LookupRange {
        addr: Raw(addr),
        size: Size::Raw(size),
    };
    run_ops(&[
        reg(0x100, 0x100, 1),
        reg(0x200, 0x100, 2),              // adjacent above
        reg(0x000, 0x100, 3),              // adjacent below
        reg(0x180, 0x1, 4),                // inside
        reg(0x0, 0x1000, 5),               // covers all
        reg(0x300, 0, 6),                  // zero size
        reg(usize::MAX, 1, 7),             // end would be usize::MAX + 1
        reg(usize::MAX - 0xff, 0xff, 8),   // ends exactly at usize::MAX
        reg(usize::MAX - 0x1ff, 0x100, 9), // adjacent below it
        reg(usize::MAX - 0x100, 0x2, 10),  // overlaps both
        range(0x100, 0x100),               // fits
        range(0x180, 0x100),               // crosses into the adjacent region
        range(0x100, 0x200),               // spans two adjacent regions
        range(0x100, 0),                   // zero length
        range(0x1ff, usize::MAX),          // overflowing
        range(usize::MAX - 1, 1),          // the top region's last byte: fits
        range(usize::MAX - 1, 2),          // would end at usize::MAX + 1
        Op::Lookup {
            addr: Raw(usize::MAX),
        }, // the one address no region can hold
        Op::Unregister { base: Raw(0x180) }, // not a base
        Op::Unregister { base: Raw(0x100) },
        reg(0x100, 0x100, 11), // re-register after removal
    ]);
}

// ---- threads -------------------------------------------------------------------------------

const THREADS: usize = 4;
/// Each thread owns `t * STRIDE .. (t + 1) * STRIDE`.
const STRIDE: usize = 0x10_0000;
const SLOT: usize = 0x1000;
const SLOTS: usize = STRIDE / SLOT;
/// Operations per thread.
const ROUNDS: usize = if cfg!(miri) { 200 } else { 20_000 };

/// What thread `thread` registers for `base..base + size`: anyone can recompute it from a
/// lookup result, so a torn or stale answer shows up as a mismatch.
fn value_for(thread: usize, base: usize, size: usize) -> u32 {
    let slot = (base % STRIDE) / SLOT;
    ((thread as u32) << 28) | ((slot as u32) << 12) | (size / 0x10) as u32
}

/// A small deterministic PRNG (xorshift64*), so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn concurrent_registration_and_lookup_stay_consistent() {
    let registry = RegionRegistry::<u32>::new();
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (registry, barrier) = (&registry, &barrier);
            scope.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (thread as u64 + 1));
                // This thread's own regions: only it changes its stride, so its own
                // lookups must be exact.
                let mut mine: BTreeMap<usize, usize> = BTreeMap::new();
                let own = thread * STRIDE;
                barrier.wait();
                for _ in 0..ROUNDS {
                    match rng.below(6) {
                        0 | 1 => {
                            let base = own + rng.below(SLOTS) * SLOT;
                            let size = (1 + rng.below(SLOT / 0x10)) * 0x10;
                            let value = value_for(thread, base, size);
                            let result = registry.register(base, size, value);
                            match mine.entry(base) {
                                Entry::Occupied(_) => {
                                    assert_eq!(result, Err(Error::RegionOverlap { base, size }));
                                }
                                Entry::Vacant(slot) => {
                                    assert_eq!(result, Ok(()));
                                    slot.insert(size);
                                }
                            }
                        }
                        2 => {
                            let base = own + rng.below(SLOTS) * SLOT;
                            let expected =
                                mine.remove(&base).map(|size| value_for(thread, base, size));
                            assert_eq!(registry.unregister(base), expected);
                        }
                        3 => {
                            let addr = own + rng.below(STRIDE);
                            let slot_base = addr - addr % SLOT;
                            let expected = mine
                                .get(&slot_base)
                                .filter(|&&size| addr < slot_base + size)
                                .map(|&size| {
                                    let span = RegionSpan {
                                        base: slot_base,
                                        size,
                                    };
                                    (span, value_for(thread, slot_base, size))
                                });
                            assert_eq!(registry.lookup(addr), expected, "own {addr:#x}");
                            assert_eq!(registry.contains(addr), expected.is_some());
                        }
                        _ => {
                            // Anywhere, mostly in other threads' strides, which change
                            // under our feet: whatever is found must be self-consistent.
                            let addr = rng.below(THREADS * STRIDE + SLOT);
                            if let Some((span, value)) = registry.lookup(addr) {
                                assert!(span.contains(addr), "{span:?} holds {addr:#x}");
                                let owner = span.base / STRIDE;
                                assert_eq!(owner, addr / STRIDE, "regions stay in their stride");
                                assert_eq!(span.base % SLOT, 0);
                                assert_eq!(value, value_for(owner, span.base, span.size));
                            }
                            match registry.lookup_range(addr, 0x10) {
                                Ok((span, value)) => {
                                    assert!(span.contains(addr) && addr + 0x10 <= span.end());
                                    let owner = span.base / STRIDE;
                                    assert_eq!(value, value_for(owner, span.base, span.size));
                                }
                                Err(Error::NotInRegion { addr: a })
                                | Err(Error::RangeOutsideRegion {
                                    addr: a,
                                    size: 0x10,
                                }) => {
                                    assert_eq!(a, addr)
                                }
                                Err(other) => panic!("lookup_range({addr:#x}): {other:?}"),
                            }
                        }
                    }
                }
                // Leave only this thread's regions, each exactly once.
                for (&base, &size) in &mine {
                    let found = registry.lookup(base + size - 1);
                    let span = RegionSpan { base, size };
                    assert_eq!(found, Some((span, value_for(thread, base, size))));
                }
            });
        }
    });
    let all = registry.drain();
    for pair in all.windows(2) {
        assert!(pair[0].0.end() <= pair[1].0.base, "no overlap: {pair:?}");
    }
    for (span, value) in all {
        assert_eq!(value, value_for(span.base / STRIDE, span.base, span.size));
    }
}
