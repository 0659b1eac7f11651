#![no_main]

use leafbridge_speaker_fuzz::differential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    differential::differential_update(data);
});
