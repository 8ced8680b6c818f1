//! `Heap::exclusive` is the heap without its lock and nothing else: the same operations,
//! made through `&Heap` on one heap and through the exclusive view on its twin (the same
//! simulated OS, so the same addresses), give the same results, errors included, the same
//! bytes in every block, the same statistics, and heaps that pass their invariant checks,
//! also when a system call is refused midway.

use codeheap::vm::SysCall;
use codeheap::{Block, Error, Heap, SimOs, SimRules, WxStrategy};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseResult, TestRunner};

#[path = "common/sim.rs"]
mod sim;
use sim::{heap, read, run};

#[derive(Debug, Clone)]
enum Op {
    Alloc(u16),
    EmitCode(u16, u32),
    /// `emit` through a closure, which fails instead of writing if `fail`.
    Emit {
        size: u16,
        value: u32,
        fail: bool,
    },
    Write {
        which: usize,
        value: u32,
    },
    Entry(usize),
    Free(usize),
    /// `free_address` at `offset` into the block (an interior address unless 0).
    FreeAddress {
        which: usize,
        offset: u8,
    },
    Patch {
        which: usize,
        at: u8,
        len: u8,
        value: u64,
    },
    Shrink {
        which: usize,
        to: u16,
    },
    Trim,
    /// The next call of one of the system calls that can fail on a real machine is refused
    /// (one failure planned at a time: a failure of the clean-up after a failure is out of
    /// scope, as in the fuzz targets).
    Refuse(u8),
}

/// The system calls [`Op::Refuse`] refuses.
const FAILABLE: [SysCall; 6] = [
    SysCall::Mmap,
    SysCall::Mprotect,
    SysCall::Madvise,
    SysCall::MemfdCreate,
    SysCall::Ftruncate,
    SysCall::Fallocate,
];

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![4 => 0u16..600, 1 => 0u16..20_000];
    let which = any::<usize>();
    prop_oneof![
        3 => size.clone().prop_map(Op::Alloc),
        4 => (size.clone(), any::<u32>()).prop_map(|(s, v)| Op::EmitCode(s, v)),
        2 => (size.clone(), any::<u32>(), prop::bool::weighted(0.3))
            .prop_map(|(size, value, fail)| Op::Emit { size, value, fail }),
        2 => (which, any::<u32>()).prop_map(|(which, value)| Op::Write { which, value }),
        2 => which.prop_map(Op::Entry),
        3 => which.prop_map(Op::Free),
        1 => (which, prop_oneof![3 => Just(0u8), 1 => any::<u8>()])
            .prop_map(|(which, offset)| Op::FreeAddress { which, offset }),
        2 => (which, any::<u8>(), 0u8..10, any::<u64>())
            .prop_map(|(which, at, len, value)| Op::Patch { which, at, len, value }),
        1 => (which, any::<u16>()).prop_map(|(which, to)| Op::Shrink { which, to }),
        1 => Just(Op::Trim),
        1 => any::<u8>().prop_map(Op::Refuse),
    ]
}

/// What an operation gave back, comparable across the twins.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Block(Result<(usize, usize), Error>),
    Done(Result<(), Error>),
    Entry(Result<usize, Error>),
    Trimmed(Result<usize, Error>),
}

fn placed(result: &Result<Block, Error>) -> Outcome {
    Outcome::Block(
        result
            .as_ref()
            .map(|b| (b.addr(), b.size()))
            .map_err(Clone::clone),
    )
}

/// A function returning `value`, padded with random-looking bytes to `size`.
fn code(heap: &Heap<SimOs>, size: usize, value: u32) -> Vec<u8> {
    let function = heap.arch().encode_return_u32(value);
    let mut bytes: Vec<u8> = (0..size).map(|i| (i as u32 ^ value) as u8).collect();
    if function.as_bytes().len() <= size {
        bytes[..function.as_bytes().len()].copy_from_slice(function.as_bytes());
    }
    bytes
}

/// One heap and the blocks it handed out.
struct Twin {
    heap: Heap<SimOs>,
    blocks: Vec<Block>,
    exclusive: bool,
}

impl Twin {
    fn apply(&mut self, op: &Op) -> Outcome {
        let pick =
            |which: usize, blocks: &Vec<Block>| (!blocks.is_empty()).then(|| which % blocks.len());
        let outcome = match *op {
            Op::Alloc(size) => {
                let result = match self.exclusive {
                    true => self.heap.exclusive().alloc(size.into()),
                    false => self.heap.alloc(size.into()),
                };
                self.keep(result)
            }
            Op::EmitCode(size, value) => {
                let bytes = code(&self.heap, size.into(), value);
                let result = match self.exclusive {
                    true => self.heap.exclusive().emit_code(&bytes),
                    false => self.heap.emit_code(&bytes),
                };
                self.keep(result)
            }
            Op::Emit { size, value, fail } => {
                let bytes = code(&self.heap, size.into(), value);
                let emit = |writer: &mut codeheap::CodeWriter<'_, SimOs>| match fail {
                    true => Err(Error::ZeroSize),
                    false => writer.write(0, &bytes),
                };
                let result = match self.exclusive {
                    true => self.heap.exclusive().emit(size.into(), emit),
                    false => self.heap.emit(size.into(), emit),
                };
                self.keep(result.map(|(block, ())| block))
            }
            Op::Write { which, value } => {
                let Some(i) = pick(which, &self.blocks) else {
                    return Outcome::Done(Ok(()));
                };
                let bytes = code(&self.heap, self.blocks[i].size(), value);
                let block = &mut self.blocks[i];
                let emit = |writer: &mut codeheap::CodeWriter<'_, SimOs>| writer.write(0, &bytes);
                Outcome::Done(match self.exclusive {
                    true => self.heap.exclusive().write(block, emit),
                    false => self.heap.write(block, emit),
                })
            }
            Op::Entry(which) => {
                let Some(i) = pick(which, &self.blocks) else {
                    return Outcome::Done(Ok(()));
                };
                let block = &self.blocks[i];
                Outcome::Entry(match self.exclusive {
                    true => self.heap.exclusive().entry_point(block),
                    false => self.heap.entry_point(block),
                })
            }
            Op::Free(which) => {
                let Some(i) = pick(which, &self.blocks) else {
                    return Outcome::Done(Ok(()));
                };
                let block = self.blocks.swap_remove(i);
                Outcome::Done(match self.exclusive {
                    true => self.heap.exclusive().free(block),
                    false => self.heap.free(block),
                })
            }
            Op::FreeAddress { which, offset } => {
                let Some(i) = pick(which, &self.blocks) else {
                    return Outcome::Done(Ok(()));
                };
                let addr = self.blocks[i].addr() + usize::from(offset);
                let result = match self.exclusive {
                    true => self.heap.exclusive().free_address(addr),
                    false => self.heap.free_address(addr),
                };
                if result.is_ok() {
                    // Its handle is stale now; the twins keep using it the same way.
                    self.blocks.swap(i, 0);
                }
                Outcome::Done(result)
            }
            Op::Patch {
                which,
                at,
                len,
                value,
            } => {
                let Some(i) = pick(which, &self.blocks) else {
                    return Outcome::Done(Ok(()));
                };
                let bytes = &value.to_le_bytes()[..usize::from(len).min(8)];
                let (block, offset) = (&self.blocks[i], usize::from(at));
                Outcome::Done(match self.exclusive {
                    true => self.heap.exclusive().patch(block, offset, bytes),
                    false => self.heap.patch(block, offset, bytes),
                })
            }
            Op::Shrink { which, to } => {
                let Some(i) = pick(which, &self.blocks) else {
                    return Outcome::Done(Ok(()));
                };
                let new_size = usize::from(to) % (self.blocks[i].size() + 2);
                let block = &mut self.blocks[i];
                Outcome::Done(match self.exclusive {
                    true => self.heap.exclusive().shrink(block, new_size),
                    false => self.heap.shrink(block, new_size),
                })
            }
            Op::Trim => Outcome::Trimmed(match self.exclusive {
                true => self.heap.exclusive().trim(),
                false => self.heap.trim(),
            }),
            Op::Refuse(call) => {
                let os = self.heap.vm().os();
                os.clear_failures();
                os.fail_next(FAILABLE[usize::from(call) % FAILABLE.len()], libc::ENOMEM);
                return Outcome::Done(Ok(()));
            }
        };
        if !matches!(op, Op::Refuse(_)) {
            self.heap.vm().os().clear_failures();
        }
        outcome
    }

    fn keep(&mut self, result: Result<Block, Error>) -> Outcome {
        let outcome = placed(&result);
        if let Ok(block) = result {
            self.blocks.push(block);
        }
        outcome
    }

    /// Each block's bytes, how it runs, and its entry point's verdict.
    fn contents(&self) -> Vec<(Vec<u8>, Result<u32, Error>)> {
        let heap = &self.heap;
        (self.blocks.iter())
            .map(|block| match heap.find(block.addr()) {
                Some(info) => (read(heap, info.addr, info.capacity), run(heap, block)),
                None => (Vec::new(), heap.entry_point(block).map(|_| 0)),
            })
            .collect()
    }
}

fn run_twins(make: impl Fn() -> Heap<SimOs>, cases: u32, ops: usize) {
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..=ops), |ops| {
        let mut locked = Twin {
            heap: make(),
            blocks: Vec::new(),
            exclusive: false,
        };
        let mut owned = Twin {
            heap: make(),
            blocks: Vec::new(),
            exclusive: true,
        };
        for op in &ops {
            check_step(&mut locked, &mut owned, op)?;
        }
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}

fn check_step(locked: &mut Twin, owned: &mut Twin, op: &Op) -> TestCaseResult {
    let expected = locked.apply(op);
    let got = owned.apply(op);
    prop_assert_eq!(&got, &expected, "{:?}", op);
    prop_assert_eq!(
        owned.heap.stats(),
        locked.heap.stats(),
        "stats after {:?}",
        op
    );
    prop_assert_eq!(owned.heap.check_invariants(), Ok(()), "after {:?}", op);
    prop_assert_eq!(locked.heap.check_invariants(), Ok(()), "after {:?}", op);
    prop_assert_eq!(owned.contents(), locked.contents(), "blocks after {:?}", op);
    Ok(())
}

/// Fewer, shorter cases under miri, which interprets every step.
fn cases() -> (u32, usize) {
    if cfg!(miri) { (1, 10) } else { (48, 40) }
}

#[test]
fn the_view_does_what_the_heap_does_on_linux_dual_map() {
    let (cases, ops) = cases();
    run_twins(
        || heap(SimOs::linux(), Some(WxStrategy::DualMap)),
        cases,
        ops,
    );
}

#[test]
fn the_view_does_what_the_heap_does_on_apple_map_jit() {
    let (cases, ops) = cases();
    run_twins(|| heap(SimOs::apple(), None), cases, ops);
}

#[test]
fn the_view_does_what_the_heap_does_under_protect() {
    let (cases, ops) = cases();
    run_twins(
        || heap(SimOs::linux(), Some(WxStrategy::Protect)),
        cases,
        ops,
    );
}

#[test]
fn the_view_does_what_the_heap_does_on_aarch64_linux() {
    let (cases, ops) = cases();
    let os = || SimOs::new(SimRules::linux_aarch64());
    run_twins(|| heap(os(), Some(WxStrategy::DualMap)), cases, ops);
}

/// What the view did, the heap has once the view is gone: its blocks run, are found and
/// are freed through `&Heap`, and handles move freely between the two.
#[test]
fn the_heap_takes_over_what_the_view_did() {
    let mut heap = heap(SimOs::linux(), Some(WxStrategy::DualMap));
    let arch = heap.arch();
    let mut blocks = Vec::new();
    {
        let mut view = heap.exclusive();
        for value in 0..20 {
            blocks.push(
                view.emit_code(arch.encode_return_u32(value).as_bytes())
                    .unwrap(),
            );
        }
        let freed = blocks.remove(3);
        view.free(freed).unwrap();
        assert_eq!(view.stats().live_blocks, 19);
    }
    for (block, value) in blocks.iter().zip((0..20).filter(|&v| v != 3)) {
        assert_eq!(run(&heap, block), Ok(value));
        assert_eq!(
            heap.find(block.addr()).map(|info| info.finalized),
            Some(true)
        );
    }
    let mut last = blocks.pop().unwrap();
    heap.write(&mut last, |w| {
        w.write(0, arch.encode_return_u32(77).as_bytes())
    })
    .unwrap();
    assert_eq!(heap.exclusive().entry_point(&last), Ok(last.addr()));
    assert_eq!(run(&heap, &last), Ok(77));
    heap.exclusive().free(last).unwrap();
    for block in blocks {
        heap.free(block).unwrap();
    }
    assert_eq!(heap.stats().live_blocks, 0);
    assert_eq!(heap.check_invariants(), Ok(()));
}

/// A panic in a closure given to the view's `emit` frees the block and leaves the thread
/// in execute mode, as on `&Heap`; the heap stays usable.
#[test]
fn a_panic_while_emitting_through_the_view_leaves_nothing_behind() {
    let mut heap = heap(SimOs::linux(), Some(WxStrategy::DualMap));
    let before = heap.stats();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = heap.exclusive().emit(64, |_writer| -> Result<(), Error> {
            panic!("the emitter fails")
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(codeheap::current_mode(), codeheap::ThreadMode::Execute);
    let after = heap.stats();
    assert_eq!(after.live_blocks, 0);
    assert_eq!(after.allocs, before.allocs + 1);
    assert_eq!(after.frees, before.frees + 1);
    assert_eq!(heap.check_invariants(), Ok(()));
    let code = heap.arch().encode_return_u32(9);
    let block = heap.exclusive().emit_code(code.as_bytes()).unwrap();
    assert_eq!(run(&heap, &block), Ok(9));
}
