#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: codeheap_fuzz::heap::Input| {
    if let Err(failure) = codeheap_fuzz::heap::run(&input) {
        panic!("{failure}");
    }
});
