//! Settings every criterion bench of the package shares.

use std::time::Duration;

use criterion::Criterion;

/// Short warm-up and measurement: the suite times many rows and sizes, on a shared machine.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}
