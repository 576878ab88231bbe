//! `cargo +nightly fuzz run config_file`: see `fuzz/README.md` and `onair_fuzz::config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    onair_fuzz::config_file(data);
});
