//! The report's W4 tables. Every case runs in a child process of its own (under `Protect`
//! the executor is expected to die). A single 2 s case of a row swings with the load of the
//! shared machine, so the cases run in interleaved rounds, every row's case once per round
//! in a rotating order, and a row's figure is its median round.

use std::collections::BTreeMap;

use codeheap::WxStrategy;
use codeheap_bench::Row;
use codeheap_bench::race::{self, RaceResult, Writer};

use crate::{Plan, result_line, run_child};

/// What the W4 tables measured, for the targets.
#[derive(Debug, Default)]
pub(crate) struct W4Figures {
    /// By row: the writer emitting, sleeping and spinning, at `CALLS_PER_PICK`.
    pub(crate) main: BTreeMap<String, [Outcome; 3]>,
    /// By row and calls per pick: the writer emitting and sleeping.
    pub(crate) by_pick: BTreeMap<(String, u32), [Outcome; 2]>,
}

/// A case's median round, or how a round's child died.
pub(crate) type Outcome = Result<RaceResult, String>;

/// Calls per pick in the table by pick rate (the main table's is `CALLS_PER_PICK`).
pub(crate) const SLOWER_PICKS: [u32; 2] = [256, 4096];

/// One case: a row, what its writer does, and the executor's calls per pick.
#[derive(Debug, Clone, Copy)]
struct Case<'a> {
    row: &'a Row,
    writer: Writer,
    calls_per_pick: u32,
}

impl Case<'_> {
    fn run(&self, plan: &Plan) -> Outcome {
        let args = [
            "w4".to_string(),
            self.row.key(),
            plan.w4.as_millis().to_string(),
            self.writer.key().to_string(),
            self.calls_per_pick.to_string(),
        ];
        run_child(&args).and_then(|stdout| {
            result_line(&stdout)
                .and_then(RaceResult::parse)
                .ok_or_else(|| "no result".to_string())
        })
    }

    /// What the median is taken over: the writer's emits when it emits, else the
    /// executor's calls.
    fn rate(&self, result: &RaceResult) -> f64 {
        match self.writer {
            Writer::Emits => result.emits_per_second(),
            Writer::Sleeps | Writer::Spins => result.calls_per_second(),
        }
    }
}

/// Runs every case `plan.w4_rounds` times, a round running each case once, starting one
/// case later each round. A case's outcome is its median round (by [`Case::rate`]) with the
/// wrong results of all rounds, or the first failure if any round failed.
fn in_rounds(cases: &[Case<'_>], plan: &Plan) -> Vec<Outcome> {
    let mut runs: Vec<Vec<Outcome>> = vec![Vec::new(); cases.len()];
    for round in 0..plan.w4_rounds {
        for i in 0..cases.len() {
            let at = (i + round) % cases.len();
            runs[at].push(cases[at].run(plan));
        }
    }
    cases
        .iter()
        .zip(runs)
        .map(|(case, rounds)| {
            let done: Vec<RaceResult> = rounds.into_iter().collect::<Result<_, _>>()?;
            RaceResult::median(&done, |r| case.rate(r)).ok_or_else(|| "no round".to_string())
        })
        .collect()
}

/// The W4 table: every row with its writer emitting, asleep and spinning.
pub(crate) fn main_table(rows: &[Row], plan: &Plan, figures: &mut W4Figures) {
    println!(
        "## W4 (a writer thread emits 256 B functions while an executor thread calls the newest \
         ones, {} calls per pick, {} ms per case, median of {} interleaved rounds)\n",
        race::CALLS_PER_PICK,
        plan.w4.as_millis(),
        plan.w4_rounds
    );
    println!(
        "calls/s is the executor's; the baselines are the same executor while the writer \
         thread sleeps (the target's \"no writer\") and while it spins without writing (the \
         other core busy, nothing written). wrong: calls that returned a wrong value, in all \
         rounds.\n"
    );
    println!(
        "| row | emits/s | calls/s | calls/s, writer sleeps | calls/s, writer spins | \
         ÷ sleeps | ÷ spins | wrong | outcome |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let writers = [Writer::Emits, Writer::Sleeps, Writer::Spins];
    let cases: Vec<Case<'_>> = (rows.iter())
        .flat_map(|row| {
            writers.map(|writer| Case {
                row,
                writer,
                calls_per_pick: race::CALLS_PER_PICK,
            })
        })
        .collect();
    let mut outcomes = in_rounds(&cases, plan).into_iter();
    for row in rows {
        let [busy, idle, spin] = [(); 3].map(|()| outcomes.next().expect("three per row"));
        let calls = |r: &Outcome| {
            r.as_ref()
                .map_or("-".to_string(), |r| format!("{:.0}", r.calls_per_second()))
        };
        match &busy {
            Ok(b) => println!(
                "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | ok |",
                row.name(),
                b.emits_per_second(),
                b.calls_per_second(),
                calls(&idle),
                calls(&spin),
                ratio(b, &idle),
                ratio(b, &spin),
                b.wrong
            ),
            Err(how) => println!(
                "| {} | - | - | {} | {} | - | - | - | {how} |",
                row.name(),
                calls(&idle),
                calls(&spin)
            ),
        }
        figures.main.insert(row.key(), [busy, idle, spin]);
    }
    println!();
}

/// W4 again for codeheap, jit-allocator and the floor, with the executor taking up new code
/// less often: what the executor keeps depends on how often it runs code the other core
/// has just written.
pub(crate) fn by_pick_rate(rows: &[Row], plan: &Plan, figures: &mut W4Figures) {
    let chosen = [
        Row::Codeheap(WxStrategy::DualMap),
        Row::JitAllocator,
        Row::Bump,
    ];
    println!(
        "## W4 by how often the executor takes up new code ({} ms per case, median of {} \
         interleaved rounds)\n",
        plan.w4.as_millis(),
        plan.w4_rounds
    );
    println!(
        "The same race; the executor calls each function it picks this many times before \
         it picks the newest again.\n"
    );
    println!("| row | calls per pick | emits/s | calls/s | calls/s, writer sleeps | ÷ sleeps |");
    println!("|---|---:|---:|---:|---:|---:|");
    let chosen: Vec<&Row> = rows.iter().filter(|row| chosen.contains(row)).collect();
    let cases: Vec<Case<'_>> = (chosen.iter())
        .flat_map(|row| SLOWER_PICKS.map(|calls_per_pick| (row, calls_per_pick)))
        .flat_map(|(row, calls_per_pick)| {
            [Writer::Emits, Writer::Sleeps].map(|writer| Case {
                row,
                writer,
                calls_per_pick,
            })
        })
        .collect();
    let mut outcomes = in_rounds(&cases, plan).into_iter();
    for row in chosen {
        for calls_per_pick in SLOWER_PICKS {
            let [busy, idle] = [(); 2].map(|()| outcomes.next().expect("two per pick rate"));
            match (&busy, &idle) {
                (Ok(b), Ok(_)) => println!(
                    "| {} | {calls_per_pick} | {:.0} | {:.0} | {} | {} |",
                    row.name(),
                    b.emits_per_second(),
                    b.calls_per_second(),
                    idle.as_ref()
                        .map_or("-".to_string(), |i| format!("{:.0}", i.calls_per_second())),
                    ratio(b, &idle)
                ),
                (Err(how), _) | (_, Err(how)) => {
                    println!("| {} | {calls_per_pick} | {how} | | | |", row.name())
                }
            }
            figures
                .by_pick
                .insert((row.key(), calls_per_pick), [busy, idle]);
        }
    }
    println!();
}

/// The executor's calls/s in `busy` over its calls/s in `baseline`.
fn ratio(busy: &RaceResult, baseline: &Outcome) -> String {
    baseline.as_ref().map_or("-".to_string(), |r| {
        format!("{:.2}", busy.calls_per_second() / r.calls_per_second())
    })
}
