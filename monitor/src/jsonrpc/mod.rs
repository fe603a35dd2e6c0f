//! MCP over stdio: framing of captured pipe bytes into messages (`framing`), JSON-RPC parsing
//! that survives truncation (`message`), and per-server sessions that pair requests with replies
//! and attribute kernel events to the tool call in flight (`session`).
pub mod framing;
pub mod message;
pub mod session;
