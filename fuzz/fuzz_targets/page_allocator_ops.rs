#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: codeheap_fuzz::page_allocator::Input| {
    if let Err(failure) = codeheap_fuzz::page_allocator::run(&input) {
        panic!("{failure}");
    }
});
