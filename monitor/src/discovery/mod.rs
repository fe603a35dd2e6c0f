//! Finding processes to watch: procfs walks for `--track-pid` and process details, MCP client
//! configs (`clients/`), decisions on provisional processes (`adopt.rs`), and servers that a
//! config names only by a local URL, matched through their listening socket (`sockets.rs`).
pub mod adopt;
pub mod clients;
pub mod procfs;
pub mod sockets;
