//! MCP over stdio: framing of captured pipe bytes into messages (`framing`), JSON-RPC parsing
//! that survives truncation (`message`), and per-server sessions that pair requests with replies
//! and attribute kernel events to the tool call in flight (`session`). MCP over HTTP (`http`)
//! turns captured socket bytes into the same messages, with the session each belongs to.
pub mod framing;
pub mod http;
pub mod message;
pub mod session;
