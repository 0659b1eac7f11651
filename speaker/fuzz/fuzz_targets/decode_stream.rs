#![no_main]

use leafbridge_speaker_fuzz::harness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| harness::decode_stream(data));
