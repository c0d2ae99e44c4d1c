//! wecom-zone: a WeCom 数据与智能专区 zone program.
//!
//! A guided tour, in the order a request meets the code:
// `unsafe` lives in two files only, both in the finance worker: the SDK's C API (`finance/ffi.rs`)
// and the worker's file descriptors (`finance/worker.rs`); the layering test holds it there.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

/// The domain: ids, events and their kinds, ability calls, typed states, the clock, the
/// dispatcher seam. A leaf: depends on nothing else of ours.
pub mod domain;

/// The abilities the application calls, and the async job runner.
pub mod abilities;
/// One shape for background work: rounds, backoff, idle timer, shutdown.
pub mod background;
/// The command line and exit codes.
pub mod cli;
/// A client that calls a running service as WeCom would (`call`, `demo`, simulator).
pub mod client;
/// Configuration: TOML, `WECOM_ZONE__…` overrides, secrets, validation.
pub mod config;
/// Pure cryptography: WXBizMsgCrypt and its envelopes. No IO.
pub mod crypto;
/// `demo`: the whole product on loopback, for a first run.
pub mod demo;
/// The classic archive's finance SDK: the C API, the worker process and its supervisor, and the
/// validation of what it decrypts.
pub mod finance;
/// The HTTP surface; the only module that knows axum.
pub mod http;
/// The front door: corp selection, signature, decryption, decoding, duplicates, dispatch.
pub mod inbound;
/// Chat-record ingest: the pull pipeline and its scheduler.
pub mod ingest;
/// The notify_id mailbox.
pub mod mailbox;
/// Classic media downloads (resumable, md5-verified, one file per md5).
pub mod media;
/// Prometheus metrics.
pub mod metrics;
/// Full-text search over the classic archive's content (Tantivy, beside the store).
pub mod search;
/// Durable storage behind the `Store` trait; the only module that knows SQL.
pub mod store;
/// Tracing setup.
pub mod telemetry;
/// The WeCom client: tokens, retries, `sync_msg`.
pub mod upstream;
/// Flat XML reading for WeCom's envelopes and events.
pub mod xml;

/// Wiring: state from config, run until shutdown.
pub mod app;
/// `bench ingest` and `bench front-door`.
pub mod bench;
/// Entry points of the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing;
/// Key files for `keygen`.
pub mod keys;
/// The dispatcher of the running service: events start pulls.
pub mod service;
/// A WeCom simulator on loopback, for `demo`, `bench` and tests.
pub mod simulator;
