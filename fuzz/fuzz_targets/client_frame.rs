//! `cargo +nightly fuzz run client_frame`: see `fuzz/README.md` and `onair_fuzz::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    onair_fuzz::client_frame(data);
});
