//! `cargo +nightly fuzz run livekit_webhook`: see `fuzz/README.md` and `onair_fuzz::livekit_webhook`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    onair_fuzz::livekit_webhook(data);
});
