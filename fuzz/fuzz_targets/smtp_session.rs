//! A whole SMTP conversation on attacker bytes: first the protocol alone (fast, line by line),
//! then the session driver with its DATA reader over an in-memory stream.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

fuzz_target!(|data: &[u8]| {
    cockpit::mail::fuzzing::smtp_protocol(data);
    RUNTIME.block_on(cockpit::mail::fuzzing::smtp_session(data));
});
