//! The webhook door: failure notices POSTed to the HTTP webhooks of `[notify] webhooks`.
//!
//! The core writes a failed run's notice into the store's outbox in the transaction that ends
//! the run (one row per webhook, see [`crate::actors::notice::durable`]); this door only reads
//! the outbox: [`webhook::WebhookNotifier`] delivers each row, signed with its webhook's secret,
//! and removes it once the receiver answered `2xx`. A failed attempt is retried with exponential
//! backoff (`backon`), until `max_attempts` or `max_age_secs`; the outbox is bounded
//! (`max_outbox`, the oldest go first). A restart loses nothing: the rows wait in the store.
//!
//! The door hears the core's notices only to wake up early when a run failed.

pub mod webhook;
