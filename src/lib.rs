//! Cockpit: an ops control plane. A REST API guarded by JWTs, a Telegram bot and an SMTP receiver
//! in front of an engine of repositories, blueprints, services and runs, all in one supervised
//! actor system.
//!
//! Layers, top to bottom; imports only point down (see ARCHITECTURE.md for the whole map):
//! - composition root: [`cli`] (the command line), [`server`] (bind, run, shut down),
//!   [`supervisor`] (the root supervisor, the only place that knows every actor);
//! - doors: [`api`] (warp routes and the HTTP server actor), [`bot`] (the Telegram bot's
//!   actors, the only user of the Telegram library), [`mail`] (the SMTP receiver, the only user of
//!   the SMTP engine), [`notify`] (failure notices to HTTP webhooks, from the store's outbox); they
//!   never import each other;
//! - the core's facade: [`client`], the typed AYS client and the views the doors show;
//! - the core: [`actors`] (AYS, repositories, OAuth cache, JWT verifier, notices), [`engine`]
//!   (templates, blueprints, services, run planning; no IO), [`runner`] (one action as a job),
//!   [`store`] (SQLite), [`auth`] (JWT rules), [`oauth`] (the central OAuth2 server's token and
//!   key, and the client side for warp apps);
//! - the base: [`config`], [`clock`], [`telemetry`].
//!
//! The core knows no door.

pub mod actors;
pub mod api;
pub mod auth;
pub mod bot;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod engine;
pub mod mail;
pub mod notify;
pub mod oauth;
pub mod runner;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod telemetry;
