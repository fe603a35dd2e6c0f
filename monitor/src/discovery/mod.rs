//! Finding processes to watch: MCP client configs of every user (`clients`), decisions on the
//! processes the kernel tracks provisionally, the start-up scan and how each server was found
//! (`adopt`), and servers that a config names only by a local URL, matched through their
//! listening socket (`sockets`). Process details and the user database come from `crate::sys`.
pub mod adopt;
pub mod clients;
pub mod container;
pub mod sockets;

// `sockets.rs` reads uids as `super::procfs` (kept so that its author's file stays untouched).
use crate::sys::procfs;
