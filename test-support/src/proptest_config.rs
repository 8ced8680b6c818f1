//! The proptest settings every crate's tests share.

use std::ffi::OsStr;

use proptest::prelude::ProptestConfig;

/// The environment variable that sets how many cases each proptest over the simulated OS
/// runs, in place of the count its test gives: a CI lane that runs the test binaries on an
/// emulated host turns them down there, since the simulated machines (x86-64 and arm64
/// Linux, arm64 macOS) behave the same on every host and the native lane runs them in full.
pub const SIM_CASES_VAR: &str = "CODEHEAP_SIM_CASES";

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

/// [`proptest_config`] for a proptest over the simulated OS: [`SIM_CASES_VAR`], when set,
/// says how many cases to run instead.
///
/// # Panics
/// If the variable is set to anything but a positive whole number: a lane that asked for a
/// count and got the default would run for far longer than it was given, silently.
pub fn sim_proptest_config(cases: u32, miri_cases: u32) -> ProptestConfig {
    overridden(
        proptest_config(cases, miri_cases),
        std::env::var_os(SIM_CASES_VAR).as_deref(),
    )
}

/// `config` with the case count `value` (the variable's), if there is one.
fn overridden(mut config: ProptestConfig, value: Option<&OsStr>) -> ProptestConfig {
    if let Some(value) = value {
        config.cases = parse_cases(&value.to_string_lossy())
            .unwrap_or_else(|| panic!("{SIM_CASES_VAR}={value:?} is not a positive number"));
    }
    config
}

fn parse_cases(value: &str) -> Option<u32> {
    value.trim().parse().ok().filter(|&cases| cases > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_count_is_a_positive_whole_number() {
        assert_eq!(parse_cases("4"), Some(4));
        assert_eq!(parse_cases(" 16\n"), Some(16));
        for bad in ["", "0", "-3", "four", "2.5", "99999999999"] {
            assert_eq!(parse_cases(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_variable_overrides_the_count_and_a_bad_value_panics() {
        let given = proptest_config(48, 1);
        assert_eq!(overridden(given.clone(), None).cases, given.cases);
        assert_eq!(overridden(given, Some(OsStr::new("4"))).cases, 4);
        let bad =
            std::panic::catch_unwind(|| overridden(proptest_config(48, 1), Some(OsStr::new("0"))));
        assert!(bad.is_err(), "a count of 0 is refused");
    }
}
