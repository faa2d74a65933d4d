//! The sticky split: a request goes to the candidate when `bucket(salt, key) < weight`, the
//! bucket being a fixed hash of the rollout's salt and the caller's key, modulo 10,000. Raising
//! the weight only adds buckets, so a caller on the candidate stays there; the same key lands
//! in the same bucket in every instance and every release (FNV-1a 64 over the salt, a 0xFF
//! byte and the key, then one SplitMix64 step, as docs/contract.md specifies).

use std::hash::{BuildHasher, Hasher};

use serde::{Deserialize, Serialize};

use super::plan::BASIS;

/// Which version answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Stable,
    Candidate,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Candidate => "candidate",
        }
    }
}

/// `key`'s bucket under `salt`, in `0..10_000`: FNV-1a (64-bit) over `salt`, a 0xFF byte and
/// `key`, mixed by one SplitMix64 step (its increment, then its finaliser), modulo 10,000; the
/// steps are written out, with test vectors, in docs/contract.md.
pub fn bucket(salt: &str, key: &[u8]) -> u32 {
    hashed(&[salt.as_bytes(), &[0xff], key])
}

fn hashed(parts: &[&[u8]]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in parts.iter().copied().flatten() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (splitmix64(hash) % u64::from(BASIS)) as u32
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The arm `key` is served by at `weight` (of 10,000).
pub fn arm(salt: &str, weight: u32, key: &[u8]) -> Arm {
    if bucket(salt, key) < weight {
        Arm::Candidate
    } else {
        Arm::Stable
    }
}

/// Whether a request stable answers is also run on the candidate, at `share` (of 10,000): an
/// independent bucket of the same key (the salt followed by `/shadow`), so a sticky caller is
/// shadowed always or never.
pub fn shadowed(salt: &str, share: u32, key: &[u8]) -> bool {
    share > 0 && hashed(&[salt.as_bytes(), b"/shadow", &[0xff], key]) < share
}

/// A key for a request that brought none: random, so the request is split at random.
pub fn random_key() -> [u8; 8] {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        .to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_documented_one() {
        // FNV-1a of "s" 0xFF "k", then SplitMix64, mod 10,000 (docs/contract.md's example).
        let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in [b's', 0xff, b'k'] {
            fnv = (fnv ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(bucket("s", b"k"), (splitmix64(fnv) % 10_000) as u32);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }

    /// The vectors docs/contract.md gives, computed from its written-out steps by a separate
    /// implementation: a client that follows the contract predicts the same arm.
    #[test]
    fn the_contracts_test_vectors_hold() {
        assert_eq!(bucket("7c1e5b2a", b"customer-42"), 1277);
        assert_eq!(bucket("7c1e5b2a", b"user-7"), 5725);
        assert_eq!(bucket("s", b"k"), 3602);
    }

    #[test]
    fn weights_split_keys_in_proportion_and_raising_one_never_moves_a_caller_back() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let mut on_candidate = vec![false; keys.len()];
        for weight in [0, 500, 2_500, 5_000, 10_000] {
            let mut count = 0;
            for (i, key) in keys.iter().enumerate() {
                let candidate = arm("salt", weight, key.as_bytes()) == Arm::Candidate;
                assert!(
                    candidate || !on_candidate[i],
                    "{key} moved back to stable at weight {weight}"
                );
                on_candidate[i] = candidate;
                count += usize::from(candidate);
            }
            let expected = weight as f64;
            assert!(
                (count as f64 - expected).abs() <= 3.0 * expected.sqrt().max(1.0) + 1.0,
                "{count} of 10,000 keys at weight {weight}"
            );
        }
    }

    #[test]
    fn salts_split_callers_independently() {
        let together = (0..10_000)
            .filter(|i| {
                let key = format!("user-{i}");
                arm("a", 5_000, key.as_bytes()) == arm("b", 5_000, key.as_bytes())
            })
            .count();
        assert!((4_700..5_300).contains(&together), "{together}");
    }
}
