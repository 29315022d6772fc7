//! Cockpit: an ops control plane. A REST API guarded by JWTs, a Telegram bot and an SMTP receiver
//! in front of an engine of repositories, blueprints, services and runs, all in one supervised
//! actor system.
//!
//! Layout (see ARCHITECTURE.md for the whole map):
//! - [`config`]: the TOML schema, defaults and validation with key paths.
//! - [`cli`]: the command line (`start`, `clean_cache`, `check-config`).
//! - [`server`]: starting and stopping the actor tree.
//! - [`actors`]: one module per actor.
//! - [`api`]: warp routes, JSON errors, OpenAPI.
//! - [`auth`]: JWT claim rules (no IO).
//! - [`engine`]: the AYS engine (no IO): templates, blueprints, services, run planning.
//! - [`mail`]: the SMTP door: sessions, the accept loop, MIME into `email` events.
//! - [`oauth`]: the central OAuth2 server's token and key, and the client side for warp apps.
//! - [`runner`]: runs one action executable as a job.
//! - [`store`]: SQLite behind one interface.
//! - [`telemetry`]: health and metrics figures.

pub mod actors;
pub mod api;
pub mod auth;
pub mod bot;
pub mod cli;
pub mod config;
pub mod engine;
pub mod mail;
pub mod oauth;
pub mod runner;
pub mod server;
pub mod store;
pub mod telemetry;
