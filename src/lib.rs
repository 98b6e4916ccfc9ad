//! cds-rotator: keeps the client secrets of CONNECT data services (CDS) clients fresh.
//!
//! The crate is one binary plus the library it is built from, so that integration tests
//! can drive the same pieces the binary wires together. `main.rs` only parses arguments
//! and wires; everything with behaviour lives in the modules below.
// Unsafe code is denied everywhere but in `memory` (two glibc malloc calls).
#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod check;
pub mod clock;
pub mod command;
pub mod connect;
pub mod coordination;
pub mod daemon;
pub mod domain;
pub mod emulator;
pub mod http;
pub mod lock;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pickup;
pub mod policy;
pub mod rlimit;
pub mod rotation;
pub mod schema;
pub mod secret;
pub mod status;
pub mod stop;
pub mod store;
pub mod systemd;
pub mod text;
pub mod writes;
