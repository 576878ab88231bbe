//! `cargo +nightly fuzz run nextcloud_request`: see `fuzz/README.md` and `onair_fuzz::nextcloud_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    onair_fuzz::nextcloud_request(data);
});
