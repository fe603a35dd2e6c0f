//! Finding processes to watch: MCP client configs of every user (`clients`), and decisions on
//! the processes the kernel tracks provisionally, the start-up scan and how each server was found
//! (`adopt`). Process details and the user database come from `crate::sys`.
pub mod adopt;
pub mod clients;
