//! A live set churned at random, for the benchmarks of one layer alone (`benches/unwind.rs`,
//! `benches/page_runs.rs`): each step makes a new item, puts it in the place of a live one
//! picked at random and gives the old one back.

use std::time::{Duration, Instant};

use crate::sizes::Rng;

/// The live items, and the generator that picks them (and that `make` draws sizes from).
#[derive(Debug)]
pub struct RandomChurn<T> {
    live: Vec<T>,
    rng: Rng,
}

impl<T> RandomChurn<T> {
    /// `live` items from `make`.
    pub fn new(live: usize, mut make: impl FnMut(&mut Rng) -> T) -> RandomChurn<T> {
        let mut rng = Rng::new(0x5eed);
        let live = (0..live).map(|_| make(&mut rng)).collect();
        RandomChurn { live, rng }
    }

    /// The live items.
    pub fn live(&self) -> &[T] {
        &self.live
    }

    /// Runs `steps` steps, each a `make` and a `free` of the item it replaces; how long
    /// they took.
    pub fn run(
        &mut self,
        steps: u64,
        mut make: impl FnMut(&mut Rng) -> T,
        mut free: impl FnMut(T),
    ) -> Duration {
        let start = Instant::now();
        for _ in 0..steps {
            let i = self.rng.below(self.live.len());
            let new = make(&mut self.rng);
            free(core::mem::replace(&mut self.live[i], new));
        }
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_frees_a_live_item_and_keeps_the_set_full() {
        let mut next = 0;
        let mut make = |_: &mut Rng| {
            next += 1;
            next
        };
        let mut churn = RandomChurn::new(10, &mut make);
        let mut freed = Vec::new();
        churn.run(100, &mut make, |item| freed.push(item));
        assert_eq!(freed.len(), 100);
        let mut all: Vec<i32> = freed
            .into_iter()
            .chain(churn.live.iter().copied())
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=110).collect::<Vec<_>>(),
            "every item made is live or freed, once"
        );
        assert!(
            churn.live.iter().any(|&item| item > 10),
            "new items took live places"
        );
    }
}
