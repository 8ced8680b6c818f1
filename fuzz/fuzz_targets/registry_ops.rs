#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: codeheap_fuzz::registry::Input| {
    if let Err(failure) = codeheap_fuzz::registry::run(&input) {
        panic!("{failure}");
    }
});
