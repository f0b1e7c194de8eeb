//! A hash that is the same in every process, build and platform, for everything that must
//! agree across sluice replicas: ring points, key positions, slow-start admission.
//!
//! FNV-1a over the bytes, then murmur3's 64-bit finaliser. FNV alone leaves the high bits of
//! short, similar inputs (`/k/1`, `/k/2`) clustered; the finaliser spreads them. Different
//! seeds give unrelated hashes of the same input, so uses do not correlate.

/// Seed of a hash key's position on a consistent-hash ring.
pub const RING_KEY: u64 = 0x5eed_0000_0000_0001;
/// Seed of an endpoint's ring points.
pub const RING_POINT: u64 = 0x5eed_0000_0000_0002;
/// Seed of a key's slow-start admission.
pub const ADMISSION: u64 = 0;

/// The stable hash of `bytes` under `seed`.
pub fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(hash)
}

/// Murmur3's 64-bit finaliser: every input bit affects every output bit.
pub fn mix(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_never_change() {
        // Replicas and restarts must agree: these values are part of the contract.
        assert_eq!(stable_hash(ADMISSION, b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_hash(RING_KEY, b"abc"), stable_hash(RING_KEY, b"abc"));
        assert_ne!(
            stable_hash(RING_KEY, b"abc"),
            stable_hash(RING_POINT, b"abc")
        );
        assert_eq!(mix(1), 0xb456_bcfc_34c2_cb2c);
    }
}
