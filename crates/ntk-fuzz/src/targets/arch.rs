//! The `--arch` SPEC parser of the `ntk` command, [`ArchConfig`]'s `FromStr`, on the input as
//! (lossy) UTF-8.
//!
//! Checked on every accepted SPEC: at least two widths, none zero, and printing it
//! (`Display`) gives a SPEC that parses back to the same value.

use ntk_cli::spec::ArchConfig;
use rand::RngExt;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;

/// SPEC syntax the byte-level mutations splice in.
pub const DICTIONARY: &[&[u8]] = &[
    b"-",
    b":",
    b"tanh",
    b"relu",
    b"elu",
    b"gelu",
    b"sigmoid",
    b"softplus",
    b" ",
    b"0",
    b"40",
    b"18446744073709551615",
    b"\xe2\x80\x94",
];

const ACTIVATIONS: [&str; 12] = [
    "tanh", "relu", "elu", "gelu", "sigmoid", "softplus", "TANH", " tanh ", "", "tanh:", "rélu",
    "tanh\0",
];

const WIDTHS: [&str; 16] = [
    "0",
    "1",
    "40",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "+3",
    " 3 ",
    "٣",
    "3.0",
    "",
    "0x10",
    "1e3",
    "00000000000000000000000000000000000003",
    "\u{a0}3",
    "3\t",
];

/// Parses `data` as a SPEC; checks what is accepted.
pub fn run(data: &[u8]) -> super::Outcome {
    let s = String::from_utf8_lossy(data);
    let spec: ArchConfig = s.parse().map_err(|e: String| super::one_line(&e))?;
    assert!(spec.widths.len() >= 2, "fewer than two widths: {spec:?}");
    assert!(!spec.widths.contains(&0), "a zero width: {spec:?}");
    let printed = spec.to_string();
    match printed.parse::<ArchConfig>() {
        Ok(back) => assert_eq!(back, spec, "`{printed}` reads back differently"),
        Err(e) => panic!("`{printed}`, printed from `{s}`, does not parse back: {e}"),
    }
    Ok(format!(
        "ok: ~2^{} widths, {:?}",
        super::size_class(spec.widths.len()),
        spec.activation
    ))
}

/// One mutation that knows SPECs: a width or the activation replaced by an interesting one,
/// many layers added, or the separators changed.
pub fn mutate(data: &mut Vec<u8>, rng: &mut SmallRng) {
    let s = String::from_utf8_lossy(data).into_owned();
    let (widths, act) = s.split_once(':').unwrap_or((s.as_str(), "tanh"));
    let mut widths: Vec<String> = widths.split('-').map(str::to_string).collect();
    let mut act = act.to_string();
    let mut colon = ":".to_string();
    match rng.random_range(0..6) {
        0 | 1 => {
            let i = rng.random_range(0..widths.len());
            widths[i] = WIDTHS.choose(rng).unwrap().to_string();
        }
        2 => {
            let w = widths.choose(rng).unwrap().clone();
            let at = rng.random_range(0..=widths.len());
            let n = *[1, 10, 1000].choose(rng).unwrap();
            widths.splice(at..at, std::iter::repeat_n(w, n));
        }
        3 => {
            widths.remove(rng.random_range(0..widths.len()));
        }
        4 => act = ACTIVATIONS.choose(rng).unwrap().to_string(),
        _ => {
            colon = ["::", "", " : ", "-:", ":-"]
                .choose(rng)
                .unwrap()
                .to_string();
        }
    }
    let sep = if rng.random_ratio(1, 8) {
        *["--", "\u{2014}", " - ", ","].choose(rng).unwrap()
    } else {
        "-"
    };
    *data = format!("{}{colon}{act}", widths.join(sep)).into_bytes();
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn specs_are_checked() {
        assert!(run(b"1-40-40-1:tanh").is_ok());
        assert!(run(b" 2 - 3 :relu").is_ok());
        assert!(run(b"1:tanh").is_err());
        assert!(run(b"\xff\xfe").is_err());
    }

    #[test]
    fn structured_mutants_parse_sometimes() {
        let mut rng = SmallRng::seed_from_u64(13);
        let mut parsed = 0;
        for _ in 0..500 {
            let mut data = b"1-40-40-1:tanh".to_vec();
            mutate(&mut data, &mut rng);
            parsed += usize::from(run(&data).is_ok());
        }
        assert!((50..450).contains(&parsed), "{parsed} of 500 mutants parse");
    }
}
