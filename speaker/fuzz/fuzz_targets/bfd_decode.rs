#![no_main]

use leafbridge_speaker_fuzz::bfd_harness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bfd_harness::decode(data));
