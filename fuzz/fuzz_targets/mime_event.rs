//! MIME on attacker bytes into the `email` event payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cockpit::mail::fuzzing::mime_event(data);
});
