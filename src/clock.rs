//! The one wall clock of cockpit. Every timestamp it stores or shows (runs, events, logins,
//! tokens) comes from here, never from `SystemTime::now()` directly.
//!
//! The clock is the wall time at first use plus the time elapsed since on tokio's clock, so a
//! test that pauses tokio's time (`tokio::time::pause()` / `advance()`) moves this clock too:
//! expiry and schedule rules are tested without sleeping. Outside a paused runtime tokio's clock
//! is the monotonic clock, so a wall-clock step (NTP) does not make time run backwards here.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall time and the tokio instant it was read at, taken once.
static ORIGIN: OnceLock<(SystemTime, tokio::time::Instant)> = OnceLock::new();

fn origin() -> (SystemTime, tokio::time::Instant) {
    *ORIGIN.get_or_init(|| (SystemTime::now(), tokio::time::Instant::now()))
}

/// The wall time now.
pub fn now() -> SystemTime {
    let (wall, at) = origin();
    wall + at.elapsed()
}

/// Time since the Unix epoch now.
pub fn since_epoch() -> Duration {
    now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    since_epoch().as_millis() as i64
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    since_epoch().as_secs() as i64
}

/// Unix seconds now, with fractions (job log lines).
pub fn now_secs_f64() -> f64 {
    since_epoch().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_wall_clock() {
        let before = now_ms();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = now_ms();
        assert!((after - before) >= 3_600_000, "{before} → {after}");
        assert!((after - before) < 3_601_000, "{before} → {after}");
    }
}
