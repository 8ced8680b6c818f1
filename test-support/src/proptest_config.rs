//! The proptest settings every crate's tests share.

use proptest::prelude::ProptestConfig;

/// `cases` cases, `miri_cases` under miri (where each is slow), and no failure file: miri's
/// isolation has no working directory to find one from, and a failing case is printed with
/// its minimal input either way.
pub fn proptest_config(cases: u32, miri_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { miri_cases } else { cases },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
