//! `cargo +nightly fuzz run jaas_webhook`: see `fuzz/README.md` and `onair_fuzz::jaas_webhook`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    onair_fuzz::jaas_webhook(data);
});
