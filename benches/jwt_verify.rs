//! The raw ES384 verification rate: what every REST request would cost without the verifier's
//! accepted-token cache. `bench/run.py` compares the REST API's request rate against it.
//!
//! `cargo bench --bench jwt_verify` prints one JSON line: `{"verify_per_sec": …}`.

use std::time::{Duration, Instant};

use serde_json::json;

fn main() {
    // `cargo test --all-targets` runs this too, without `--bench`: nothing to measure then.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let private = std::fs::read_to_string(root.join("tests/support/keys/test_p384.pem"))
        .expect("the test private key");
    let public = std::fs::read_to_string(root.join("tests/support/keys/test_p384.pub.pem"))
        .expect("the test public key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({"iss": "itsyouonline", "exp": now + 3600, "username": "bench",
                        "scope": ["user:memberof:myorg"]});
    let token = cockpit::auth::mint_token(&private, &claims).expect("mint");
    let rules =
        cockpit::auth::JwtRules::new(&public, "itsyouonline", "myorg").expect("the public key");

    // Warm up, then verify for a fixed time on one core.
    for _ in 0..50 {
        rules.verify(&token, now).expect("a valid token");
    }
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        rules.verify(&token, now).expect("a valid token");
        count += 1;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    println!("{}", json!({"verify_per_sec": rate}));
}
