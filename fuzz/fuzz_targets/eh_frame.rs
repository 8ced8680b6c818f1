#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: codeheap_fuzz::eh_frame::Input| {
    if let Err(failure) = codeheap_fuzz::eh_frame::run(&input) {
        panic!("{failure}");
    }
});
