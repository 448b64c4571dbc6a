//! A small, fixed hash: the same ids give the same host orders on every machine and every run.

/// FNV-1a over the bytes, finished with [`mix`].
pub(crate) fn hash_str(tag: &str, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tag.bytes().chain([0u8]).chain(s.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The splitmix64 finaliser: a bijection on `u64` that scatters nearby inputs.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The position key of a host (by its hash) in the host order of a plan (by its seed).
#[inline]
pub(crate) fn ord(seed: u64, host_hash: u64) -> u64 {
    mix(seed ^ host_hash)
}
