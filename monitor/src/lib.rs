//! mcpmon daemon library. Each module owns one stage of the pipeline (see docs/architecture.md):
//!
//! probes (load/attach, feature probing) → events (ring buffer, decode) → process_tree →
//! correlation (JSON-RPC over stdio and HTTP) → rules → actions and alerts → output.
//!
//! `tracker` owns the kernel's tracked-process map; `control` and `discovery` feed it.
pub mod cli;
pub mod config;
pub mod control;
pub mod correlation;
pub mod daemon;
pub mod discovery;
pub mod doctor;
pub mod events;
pub mod export;
pub mod gate;
pub mod watch;
pub mod jsonrpc;
pub mod metrics;
pub mod output;
pub mod probes;
pub mod rules;
pub mod actions;
pub mod attack;
pub mod alerts;
pub mod bench;
pub mod process_tree;
pub mod toolcheck;
pub mod top;
pub mod tracker;
