//! The host's process table and user database, read for the stages above: a leaf that knows
//! nothing of tracking, discovery or rules. `procfs` reads /proc through the `procfs` crate;
//! `procmem` searches a process's own memory; `users` reads the user database. Discovery, the tracker, the control socket, the gate and the
//! rules engine depend on it instead of on each other.
pub mod procfs;
pub mod procmem;
pub mod users;
