use codeheap::{FrameDescription, Heap, WxStrategy};
use std::time::Instant;
fn main() {
    let heap = Heap::with_strategy(WxStrategy::DualMap).unwrap();
    let frame = FrameDescription::standard(heap.arch());
    let unwind = std::env::args().nth(2).as_deref() == Some("unwind");
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(20000);
    let alloc = |size| {
        if unwind {
            heap.alloc_with_unwind(size, frame.clone()).unwrap()
        } else {
            heap.alloc(size).unwrap()
        }
    };
    let mut blocks: Vec<_> = (0..n).map(|_| alloc(100)).collect();
    let mut x: u64 = 88172645463325252;
    for round in 0..5 {
        let t = Instant::now();
        for _ in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % blocks.len() as u64) as usize;
            let size = 64 + (x >> 32) as usize % 900;
            let old = std::mem::replace(&mut blocks[i], alloc(size));
            heap.free(old).unwrap();
        }
        println!(
            "round {round}: {:>8.0} ns/step",
            t.elapsed().as_nanos() as f64 / 20000.0
        );
    }
}
