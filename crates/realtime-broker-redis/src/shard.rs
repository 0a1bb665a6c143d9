//! Which Redis a stream lives on: pure functions, the same on every node.
//!
//! [`RedisBrokerConfig::url`](crate::RedisBrokerConfig::url) is a comma-separated list of
//! URLs, one shard each, in the order given. A stream goes to shard
//! `jump(fnv1a64(stream name), shards)`: Lamping and Veach's jump consistent hash over the
//! 64-bit FNV-1a hash of the name. Every node must list the same URLs in the same order.
//! Appending a shard moves about `1/(n+1)` of the streams, each to the new shard; removing
//! or reordering shards moves more.

use realtime_core::StreamName;

/// Why a URL list is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlListError {
    /// An entry is empty (or only spaces): `a,,b`, `a,` or an empty list.
    Empty,
    /// The same URL is listed twice (the text never says which: it may hold a password).
    Duplicate,
}

/// The shard URLs of a comma-separated list, trimmed; a comma inside a password is written
/// `%2C` (the URL is percent-decoded).
///
/// # Errors
/// [`UrlListError`] for an empty entry or a URL listed twice.
pub(crate) fn split_urls(list: &str) -> Result<Vec<&str>, UrlListError> {
    let urls: Vec<&str> = list.split(',').map(str::trim).collect();
    if urls.iter().any(|url| url.is_empty()) {
        return Err(UrlListError::Empty);
    }
    for (i, url) in urls.iter().enumerate() {
        if urls[..i].contains(url) {
            return Err(UrlListError::Duplicate);
        }
    }
    Ok(urls)
}

/// 64-bit FNV-1a of `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Jump consistent hash (Lamping and Veach, 2014): the bucket in `0..buckets` of `key`
/// (0 when `buckets` is 0 or 1).
pub(crate) fn jump(mut key: u64, buckets: usize) -> usize {
    let buckets = i64::try_from(buckets).unwrap_or(i64::MAX);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The paper's floating-point step (every value here fits an f64 exactly).
        j = ((b + 1) as f64 * ((1_u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    usize::try_from(b).unwrap_or(0)
}

/// The shard of `stream` among `shards`: by its name as it is written (`topic:orders`).
pub(crate) fn shard_of(stream: &StreamName, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    jump(fnv1a64(stream.to_string().as_bytes()), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize) -> StreamName {
        StreamName::parse(&format!("topic:t{n}")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn fnv1a64_matches_the_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_matches_the_reference_values() {
        assert_eq!(jump(256, 1024), 520);
        assert_eq!(jump(10_863_919_174_838_991, 11), 6);
        assert_eq!(jump(2_016_238_256_797_177_309, 11), 3);
        for key in [0, 1, u64::MAX] {
            assert_eq!(jump(key, 1), 0);
            assert_eq!(jump(key, 0), 0);
        }
    }

    #[test]
    fn a_stream_always_goes_to_the_same_shard() {
        for n in 0..1000 {
            let first = shard_of(&stream(n), 3);
            assert!(first < 3);
            assert_eq!(shard_of(&stream(n), 3), first);
        }
        assert_eq!(shard_of(&stream(1), 1), 0);
    }

    #[test]
    fn streams_are_balanced_over_the_shards() {
        let total = 30_000;
        for shards in [2, 3, 5] {
            let mut counts = vec![0_usize; shards];
            for n in 0..total {
                counts[shard_of(&stream(n), shards)] += 1;
            }
            let fair = total / shards;
            for count in &counts {
                // Within 5% of a fair share (a binomial's deviation is well under 1%).
                assert!(count.abs_diff(fair) < fair / 20, "{shards} shards: {counts:?}");
            }
        }
    }

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one_streams_all_to_the_new_shard() {
        let total = 30_000;
        for shards in [1, 2, 4] {
            let mut moved = 0_usize;
            for n in 0..total {
                let (before, after) =
                    (shard_of(&stream(n), shards), shard_of(&stream(n), shards + 1));
                if before != after {
                    assert_eq!(after, shards, "a stream moves only to the new shard");
                    moved += 1;
                }
            }
            let expected = total / (shards + 1);
            assert!(moved.abs_diff(expected) < expected / 10, "{shards}+1: {moved} moved");
        }
    }

    #[test]
    fn url_lists() {
        assert_eq!(split_urls("redis://a"), Ok(vec!["redis://a"]));
        assert_eq!(split_urls(" redis://a , redis://b"), Ok(vec!["redis://a", "redis://b"]));
        for empty in ["", " ", "redis://a,", ",redis://a", "redis://a,,redis://b"] {
            assert_eq!(split_urls(empty), Err(UrlListError::Empty), "{empty:?}");
        }
        assert_eq!(split_urls("redis://a,redis://b, redis://a"), Err(UrlListError::Duplicate));
    }
}
