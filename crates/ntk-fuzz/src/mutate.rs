//! The mutations: byte-level ones that know nothing of the format (bit flips, interesting
//! values, inserted, deleted and duplicated ranges, dictionary tokens, splices of two corpus
//! entries), stacked with the structure-aware ones of each target ([`Target::mutate`]).

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngExt};

use crate::Target;

/// Byte values at the edges of signed and unsigned ranges.
pub const INTERESTING_U8: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x20, b'0', b'9'];

/// 16-, 32- and 64-bit values at the edges of integer ranges and of the sizes parsers
/// allocate from.
pub const INTERESTING_U64: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// Numbers as text at the edges of what `f64` and `usize` parse.
pub const INTERESTING_NUMBERS: [&str; 24] = [
    "0",
    "-0",
    "1",
    "-1",
    "1e308",
    "-1e308",
    "1e309",
    "2.2250738585072014e-308",
    "4.9e-324",
    "1e-400",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "00000000000000000000000000000000000000000000000000000000000000001",
    "0x10",
    "1_000",
    "+.5e+5",
];

/// Mutates `parent` into a new input of at most `max_len` bytes: 1 to 16 stacked mutations,
/// each a structure-aware one of `target` (one in three) or a byte-level one; `other` is a
/// second corpus entry to splice with.
pub fn mutate(
    target: Target,
    parent: &[u8],
    other: &[u8],
    rng: &mut SmallRng,
    max_len: usize,
) -> Vec<u8> {
    let mut data = parent.to_vec();
    let stack = 1usize << rng.random_range(0..5);
    for _ in 0..stack {
        if rng.random_ratio(1, 3) {
            target.mutate(&mut data, rng);
        } else {
            havoc(&mut data, other, target.dictionary(), rng);
        }
        data.truncate(max_len);
    }
    data
}

/// One byte-level mutation of `data`.
pub fn havoc(data: &mut Vec<u8>, other: &[u8], dictionary: &[&[u8]], rng: &mut SmallRng) {
    if data.is_empty() {
        // Only insertions make sense.
        let token = dictionary.choose(rng).copied().unwrap_or(b"0");
        data.extend_from_slice(token);
        return;
    }
    let len = data.len();
    match rng.random_range(0..15) {
        0 => {
            let i = rng.random_range(0..len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = rng.random_range(0..len);
            data[i] = *INTERESTING_U8.choose(rng).unwrap();
        }
        2 => {
            let i = rng.random_range(0..len);
            data[i] = rng.random();
        }
        3 => {
            let i = rng.random_range(0..len);
            data[i] = data[i].wrapping_add(rng.random_range(1..=35u8).wrapping_sub(18));
        }
        4 => {
            // An interesting 2-, 4- or 8-byte integer, either endianness.
            let width = *[2usize, 4, 8].choose(rng).unwrap();
            if len >= width {
                let v = *INTERESTING_U64.choose(rng).unwrap();
                let bytes = if rng.random() {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let i = rng.random_range(0..=len - width);
                let src = if rng.random() {
                    &bytes[..width]
                } else {
                    &bytes[8 - width..]
                };
                data[i..i + width].copy_from_slice(src);
            }
        }
        5 => {
            let (a, b) = range(len, rng);
            data.drain(a..b);
        }
        6 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..=16);
            let fill: Vec<u8> = if rng.random() {
                vec![rng.random(); n]
            } else {
                (0..n).map(|_| rng.random()).collect()
            };
            data.splice(at..at, fill);
        }
        7 => {
            // Duplicate a range, sometimes many times.
            let (a, b) = range(len, rng);
            let times = if rng.random_ratio(1, 8) {
                rng.random_range(2..64)
            } else {
                1
            };
            let chunk = data[a..b].repeat(times);
            let at = rng.random_range(0..=len);
            data.splice(at..at, chunk);
        }
        8 => {
            // Copy a range over another place.
            let (a, b) = range(len, rng);
            let at = rng.random_range(0..=len - (b - a));
            let chunk = data[a..b].to_vec();
            data[at..at + chunk.len()].copy_from_slice(&chunk);
        }
        9 | 10 => {
            if let Some(token) = dictionary.choose(rng) {
                let at = rng.random_range(0..=len);
                if rng.random() {
                    data.splice(at..at, token.iter().copied());
                } else {
                    let end = (at + token.len()).min(len);
                    data.splice(at..end, token.iter().copied());
                }
            }
        }
        11 => {
            // Splice: a prefix of this entry, a suffix of the other.
            if !other.is_empty() {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
        }
        12 => {
            if !other.is_empty() {
                let (a, b) = range(other.len(), rng);
                let at = rng.random_range(0..=len);
                data.splice(at..at, other[a..b].iter().copied());
            }
        }
        13 => data.truncate(rng.random_range(0..len)),
        _ => replace_number(data, rng),
    }
}

/// Replaces a run of ASCII digits (with its sign, point and exponent) by an interesting
/// number, or inserts one where there is no digit.
pub fn replace_number(data: &mut Vec<u8>, rng: &mut SmallRng) {
    let number = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E');
    let digits: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit())
        .collect();
    let text = INTERESTING_NUMBERS.choose(rng).unwrap().as_bytes();
    match digits.choose(rng) {
        Some(&i) => {
            let (a, b) = crate::targets::field_around(data, i, |b| !number(b));
            data.splice(a..b, text.iter().copied());
        }
        None => {
            let at = rng.random_range(0..=data.len());
            data.splice(at..at, text.iter().copied());
        }
    }
}

/// A random non-empty range `a..b` of `0..len` (`len > 0`), short more often than long.
pub fn range(len: usize, rng: &mut impl Rng) -> (usize, usize) {
    let a = rng.random_range(0..len);
    let max = len - a;
    let n = if rng.random_ratio(3, 4) {
        rng.random_range(1..=max.min(8))
    } else {
        rng.random_range(1..=max)
    };
    (a, a + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mutants_respect_the_length_cap_and_differ() {
        let mut rng = SmallRng::seed_from_u64(7);
        let parent = b"x,y\n1,2\n3,4\n".to_vec();
        let mut changed = 0;
        for _ in 0..2000 {
            let m = mutate(Target::Csv, &parent, b"a,b,y\n5,6,7\n", &mut rng, 64);
            assert!(m.len() <= 64);
            changed += usize::from(m != parent);
        }
        assert!(changed > 1800, "only {changed} of 2000 mutants differ");
        let mut empty = Vec::new();
        havoc(&mut empty, b"", &[], &mut rng);
        assert!(!empty.is_empty());
    }

    #[test]
    fn numbers_are_replaced_whole() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut data = b"a,-1.5e3,b".to_vec();
        replace_number(&mut data, &mut rng);
        let text = String::from_utf8(data).unwrap();
        assert!(text.starts_with("a,") && text.ends_with(",b"), "{text}");
        assert!(
            INTERESTING_NUMBERS.contains(&&text[2..text.len() - 2]),
            "{text}"
        );
    }
}
