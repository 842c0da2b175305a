//! The safetensors checkpoint reader, [`ntk_ops::checkpoint::params_from_bytes`], against the
//! PyTorch `nn.Sequential` layouts of a 1-16-1 and a 2-8-8-1 network.
//!
//! Checked on every accepted file: the parameter vector has the layout's length, every entry
//! is finite, and writing it back ([`ntk_ops::checkpoint::params_to_bytes`], f64) and reading
//! that gives the same vector.

use ntk_ops::ParamLayout;
use ntk_ops::checkpoint::{DiskDtype, params_from_bytes, params_to_bytes};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngExt};
use serde_json::{Map, Value, json};

use crate::mutate::INTERESTING_U64;

/// The layers' widths of the layouts each input is read against.
pub const LAYOUTS: [&[usize]; 2] = [&[1, 16, 1], &[2, 8, 8, 1]];

/// JSON and safetensors header tokens the byte-level mutations splice in.
pub const DICTIONARY: &[&[u8]] = &[
    b"\"dtype\"",
    b"\"shape\"",
    b"\"data_offsets\"",
    b"\"__metadata__\"",
    b"\"F32\"",
    b"\"F64\"",
    b"\"F16\"",
    b"\"BF16\"",
    b"\"I64\"",
    b"\"BOOL\"",
    b"\"0.weight\"",
    b"\"0.bias\"",
    b"[]",
    b"{}",
    b"18446744073709551615",
    b"-1",
    b"1e3",
    b"null",
    b"\\u0000",
];

/// Dtype names, real and not.
const DTYPES: [&str; 16] = [
    "F32", "F64", "F16", "BF16", "I8", "U8", "I16", "I32", "I64", "U64", "BOOL", "F8_E4M3",
    "F8_E5M2", "C64", "E8M0", "f32",
];

/// Reads `data` against each layout of [`LAYOUTS`]; checks what is accepted.
pub fn run(data: &[u8]) -> super::Outcome {
    let mut answers = Vec::with_capacity(LAYOUTS.len());
    let mut accepted = false;
    for widths in LAYOUTS {
        let layout = ParamLayout::sequential_linear(widths);
        match params_from_bytes(&layout, data, "") {
            Ok(theta) => {
                assert_eq!(theta.len(), layout.n_params(), "parameter count");
                assert!(
                    theta.iter().all(|v| v.is_finite()),
                    "a non-finite parameter was accepted"
                );
                let bytes = params_to_bytes(&layout, &theta, DiskDtype::F64)
                    .expect("writing accepted parameters");
                let back = params_from_bytes(&layout, &bytes, "").expect("reading them back");
                assert_eq!(back, theta, "parameters change on a round trip");
                accepted = true;
                answers.push(format!("ok {widths:?}"));
            }
            Err(e) => answers.push(super::one_line(&e.to_string())),
        }
    }
    let answer = answers.join("\n");
    if accepted { Ok(answer) } else { Err(answer) }
}

/// The seeds: each layout written in f32 and in f64 by `params_to_bytes`, and one file with
/// an extra tensor and metadata that the reader must ignore.
pub fn generated_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for widths in LAYOUTS {
        let layout = ParamLayout::sequential_linear(widths);
        let theta: Vec<f64> = (0..layout.n_params())
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        let name = widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("-");
        for (dtype, tag) in [(DiskDtype::F32, "f32"), (DiskDtype::F64, "f64")] {
            let bytes = params_to_bytes(&layout, &theta, dtype).expect("seed parameters");
            seeds.push((format!("mlp-{name}-{tag}.safetensors"), bytes));
        }
    }
    let (mut header, mut body) = split(&seeds[0].1).expect("a seed splits");
    let end = body.len();
    header.insert(
        "extra".into(),
        json!({"dtype": "I64", "shape": [2], "data_offsets": [end, end + 16]}),
    );
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    body.extend_from_slice(&[7; 16]);
    seeds.push(("extra-tensor.safetensors".into(), join(&header, &body, 0)));
    seeds
}

/// The header (a JSON object) and the data of a safetensors file, if it has that shape.
fn split(data: &[u8]) -> Option<(Map<String, Value>, Vec<u8>)> {
    let n = usize::try_from(u64::from_le_bytes(data.get(..8)?.try_into().ok()?)).ok()?;
    let header = data.get(8..8usize.checked_add(n)?)?;
    match serde_json::from_slice(header).ok()? {
        Value::Object(map) => Some((map, data[8 + n..].to_vec())),
        _ => None,
    }
}

/// A safetensors file from its header and data, the header padded with `pad` spaces.
fn join(header: &Map<String, Value>, body: &[u8], pad: usize) -> Vec<u8> {
    let mut json = serde_json::to_vec(header).expect("a JSON map serializes");
    json.extend(std::iter::repeat_n(b' ', pad));
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    out
}

/// One mutation that knows safetensors: the header length set to an interesting value, or a
/// tensor's shape, offsets, dtype or name changed in the JSON header (sizes huge or
/// inconsistent), a tensor dropped or duplicated, metadata added, or the data cut, extended
/// or filled with NaN.
pub fn mutate(data: &mut Vec<u8>, rng: &mut SmallRng) {
    if data.len() >= 8 && rng.random_ratio(1, 6) {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
        let v = match rng.random_range(0..4) {
            0 => *INTERESTING_U64.choose(rng).unwrap(),
            1 => n.wrapping_add(rng.random_range(1..=16)),
            2 => n.wrapping_sub(rng.random_range(1..=16)),
            _ => data.len() as u64 - 8,
        };
        data[..8].copy_from_slice(&v.to_le_bytes());
        return;
    }
    let Some((mut header, mut body)) = split(data) else {
        return;
    };
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let Some(name) = names.choose(rng).cloned() else {
        return;
    };
    let mut pad = 0;
    let op = rng.random_range(0..10);
    if op < 5 && !header[&name].is_object() {
        return;
    }
    match op {
        0 | 1 => {
            let shape = &mut header[&name]["shape"];
            if let Some(dims) = shape.as_array_mut() {
                match rng.random_range(0..4) {
                    0 if !dims.is_empty() => {
                        let i = rng.random_range(0..dims.len());
                        dims[i] = big(rng);
                    }
                    1 => dims.push(big(rng)),
                    2 => {
                        dims.pop();
                    }
                    _ => dims.reverse(),
                }
            } else {
                *shape = json!([1]);
            }
        }
        2 | 3 => {
            let offsets = &mut header[&name]["data_offsets"];
            if let Some(o) = offsets.as_array_mut() {
                match rng.random_range(0..4) {
                    0 if !o.is_empty() => {
                        let i = rng.random_range(0..o.len());
                        o[i] = big(rng);
                    }
                    1 => o.reverse(),
                    2 => {
                        o.pop();
                    }
                    _ => o.push(json!(body.len())),
                }
            }
        }
        4 => {
            header[&name]["dtype"] = json!(DTYPES.choose(rng).unwrap());
        }
        5 => {
            let v = header.remove(&name).unwrap();
            if rng.random() {
                let renamed = [" ", "net.", "\u{0}", "0.weight", "2.bias", "é"]
                    .choose(rng)
                    .unwrap();
                header.insert(format!("{renamed}{name}"), v);
            }
        }
        6 => {
            let v = header[&name].clone();
            let other = names.choose(rng).unwrap().clone();
            header.insert(other, v);
        }
        7 => {
            header.insert(
                "__metadata__".into(),
                [
                    json!({"format": "pt"}),
                    json!({"a": 1}),
                    json!([]),
                    json!(null),
                ]
                .choose(rng)
                .unwrap()
                .clone(),
            );
        }
        8 => match rng.random_range(0..3) {
            0 => body.truncate(rng.random_range(0..=body.len())),
            1 => body.extend(std::iter::repeat_n(0, rng.random_range(1..64))),
            _ => {
                // NaN or infinity over a stretch of the data (f32 and f64 bit patterns).
                let pattern: Vec<u8> = match rng.random_range(0..4) {
                    0 => f32::NAN.to_le_bytes().to_vec(),
                    1 => f32::INFINITY.to_le_bytes().to_vec(),
                    2 => f64::NAN.to_le_bytes().to_vec(),
                    _ => f64::NEG_INFINITY.to_le_bytes().to_vec(),
                };
                if body.len() >= pattern.len() {
                    let at = rng.random_range(0..=body.len() - pattern.len());
                    body[at..at + pattern.len()].copy_from_slice(&pattern);
                }
            }
        },
        _ => pad = rng.random_range(1..8),
    }
    *data = join(&header, &body, pad);
}

/// A JSON number that is an interesting size: 0, 1, near a power of two, or huge.
fn big(rng: &mut impl Rng) -> Value {
    match rng.random_range(0..4) {
        0 => json!(INTERESTING_U64.choose(rng).unwrap()),
        1 => json!(rng.random_range(0..64u64)),
        2 => json!(-1),
        _ => json!(1u64 << rng.random_range(8..64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn seeds_are_accepted_and_headers_round_trip() {
        for (name, bytes) in generated_seeds() {
            assert!(run(&bytes).is_ok(), "{name}: {:?}", run(&bytes));
            let (header, body) = split(&bytes).unwrap();
            assert_eq!(split(&join(&header, &body, 3)).unwrap().0, header);
        }
    }

    #[test]
    fn structured_mutants_are_mostly_refused_cleanly() {
        let seed = &generated_seeds()[0].1;
        let mut rng = SmallRng::seed_from_u64(5);
        let mut refused = 0;
        for _ in 0..300 {
            let mut data = seed.clone();
            mutate(&mut data, &mut rng);
            refused += usize::from(run(&data).is_err());
        }
        assert!(refused > 100, "only {refused} of 300 mutants refused");
    }
}
