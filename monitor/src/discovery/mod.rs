//! Finding processes to watch. Today: procfs walks for `--track-pid` and process details; MCP
//! client configs and protocol sniffing plug in here next.
pub mod adopt;
pub mod clients;
pub mod procfs;
