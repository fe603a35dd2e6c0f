//! `COMM_FILTER`: the bits the exec hook tests before it looks a comm up in `CANDIDATE_COMMS`.
//!
//! Every exec of the machine asks whether its new comm is a configured MCP command and whether
//! its parent's is an MCP client. Two hash-map lookups answered that, for about 170 ns a run,
//! almost always "no". A set of 4096 bits, one per hash of the comms the daemon put in the map,
//! answers "no" with one load for all but a few comms in a thousand; only a set bit goes on to
//! the lookup, so a collision costs a lookup and never a wrong answer. The daemon writes the
//! whole set whenever the comms change (`monitor/src/tracker.rs`).

use crate::Comm;

/// Bits in the set: 64 words, 512 bytes, one array element.
pub const COMM_FILTER_BITS: u32 = 4096;

/// Words of the set.
const WORDS: usize = (COMM_FILTER_BITS / 64) as usize;

/// The value of `COMM_FILTER`'s one element.
pub type CommFilter = [u64; WORDS];

/// A comm as two little-endian words, the form the kernel reads it in (two loads).
pub fn comm_words(c: &Comm) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&c[..8]);
    b.copy_from_slice(&c[8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

/// The comm of two words read from `task->comm`, with every byte after the first NUL cleared.
/// The kernel pads a comm it sets with NULs, so this is only insurance: a key with bytes left
/// behind its NUL would match neither the filter nor `CANDIDATE_COMMS`.
#[inline(always)]
pub fn comm_trimmed(a: u64, b: u64) -> (u64, u64) {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The lowest set bit of `zero` is the top bit of the first NUL byte (exact for the first
    // one; the trick may also flag bytes after it, which are cleared anyway).
    let zero = |w: u64| w.wrapping_sub(LOW) & !w & HIGH;
    let keep_below = |z: u64| ((z & z.wrapping_neg()) >> 7).wrapping_sub(1);
    let za = zero(a);
    if za != 0 {
        return (a & keep_below(za), 0);
    }
    let zb = zero(b);
    if zb != 0 {
        return (a, b & keep_below(zb));
    }
    (a, b)
}

/// The bit of comm `(a, b)` (its words, trimmed) in the set.
#[inline(always)]
pub fn comm_filter_bit(a: u64, b: u64) -> u32 {
    let x = (a ^ b.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 52) as u32
}

/// Where comm `(a, b)`'s bit lies: its word in the set (masked, which also shows the verifier
/// the index in bounds) and its mask in that word.
#[inline(always)]
fn slot(a: u64, b: u64) -> (usize, u64) {
    let bit = comm_filter_bit(a, b);
    ((bit / 64) as usize & (WORDS - 1), 1 << (bit % 64))
}

/// The set holding `comms`.
pub fn comm_filter_of<'a>(comms: impl IntoIterator<Item = &'a Comm>) -> CommFilter {
    let mut f = [0u64; WORDS];
    for c in comms {
        let (a, b) = comm_words(c);
        let (w, m) = slot(a, b);
        f[w] |= m;
    }
    f
}

/// Whether `(a, b)`'s bit is set in `f`.
#[inline(always)]
pub fn comm_filter_has(f: &CommFilter, a: u64, b: u64) -> bool {
    let (w, m) = slot(a, b);
    f[w] & m != 0
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, vec::Vec};

    use super::*;
    use crate::comm_key;

    #[test]
    fn every_comm_put_in_is_found_and_few_others_are() {
        let names = ["claude", "Claude", "cursor", "code", "windsurf", "codex", "npx", "uvx", "node", "python3", "mcp-server-fetc"];
        let keys: Vec<Comm> = names.iter().map(|n| comm_key(n)).collect();
        let f = comm_filter_of(&keys);
        for k in &keys {
            let (a, b) = comm_words(k);
            assert!(comm_filter_has(&f, a, b), "{:?}", k);
        }
        let others = (0..10_000).filter(|i| {
            let (a, b) = comm_words(&comm_key(&format!("proc{i}")));
            comm_filter_has(&f, a, b)
        });
        // 11 bits of 4096 set: about 27 of 10,000 others pass to the lookup.
        assert!(others.count() < 100);
    }

    #[test]
    fn bytes_behind_the_first_nul_do_not_change_the_key() {
        for name in ["", "a", "sh", "claude", "python3.1", "fifteen-chars-x"] {
            let clean = comm_key(name);
            let mut dirty = clean;
            for (i, b) in dirty.iter_mut().enumerate().skip(name.len() + 1) {
                *b = 0xa0 + i as u8;
            }
            let (a, b) = comm_words(&dirty);
            assert_eq!(comm_trimmed(a, b), comm_words(&clean), "{name:?}");
        }
        // A full 15-byte comm keeps its 15 bytes.
        let (a, b) = comm_words(&comm_key("abcdefghijklmno"));
        assert_eq!(comm_trimmed(a, b), (a, b));
    }
}
