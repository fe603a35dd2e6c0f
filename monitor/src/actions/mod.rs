//! Actions stage: carries out what matched rules decide. The kernel's share (protected inodes,
//! denied prefixes, io_uring) lives in eBPF maps (`kernel`, filled by `protect`); kills that need
//! correlation are sent from user space through a pidfd (`kill`).
pub mod kernel;
pub mod kill;
pub mod protect;
