//! The fuzz targets: one module per parser, each with the checks it makes on what the
//! parser accepts and the mutations that know its format.
//!
//! Every target takes arbitrary bytes and returns an [`Outcome`]; a panic (a failed
//! invariant included), an abort or a hang is a finding.

pub mod arch;
pub mod csv;
pub mod dly;
pub mod geotiff;
pub mod onnx;
pub mod safetensors;
mod selftest;

use std::path::PathBuf;

use rand::rngs::SmallRng;

/// What a target made of one input: `Ok` with a short description of what was accepted, or
/// `Err` with the parser's message; a line each where a target runs several parsers. Both are normal answers; the engine uses them to tell
/// inputs that behave in a new way from those that do not.
pub type Outcome = Result<String, String>;

/// A fuzz target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Target {
    /// The CSV table reader of the `ntk` command ([`csv`]).
    Csv,
    /// The safetensors checkpoint reader ([`safetensors`]).
    Safetensors,
    /// The GHCN-Daily `.dly` and station-list parsers ([`dly`]).
    Dly,
    /// The GeoTIFF raster reader of `cargo xtask data` ([`geotiff`]).
    Geotiff,
    /// The `--arch` SPEC parser ([`arch`]).
    Arch,
    /// The ONNX graph reader ([`onnx`]).
    Onnx,
    /// The harness's own check: planted panic, abort, stack overflow and hang (hidden).
    #[value(hide = true)]
    Selftest,
}

impl Target {
    /// The targets `cargo xtask fuzz` runs, in order (the self-test is not one).
    pub const ALL: [Target; 6] = [
        Target::Csv,
        Target::Safetensors,
        Target::Dly,
        Target::Geotiff,
        Target::Arch,
        Target::Onnx,
    ];

    /// The target's name (its folder under `corpus/` and `regressions/`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Csv => "csv",
            Target::Safetensors => "safetensors",
            Target::Dly => "dly",
            Target::Geotiff => "geotiff",
            Target::Arch => "arch",
            Target::Onnx => "onnx",
            Target::Selftest => "selftest",
        }
    }

    /// Runs the target on `data`. Panics where the parser breaks one of the target's checks.
    pub fn run(self, data: &[u8]) -> Outcome {
        match self {
            Target::Csv => csv::run(data),
            Target::Safetensors => safetensors::run(data),
            Target::Dly => dly::run(data),
            Target::Geotiff => geotiff::run(data),
            Target::Arch => arch::run(data),
            Target::Onnx => onnx::run(data),
            Target::Selftest => selftest::run(data),
        }
    }

    /// Applies one mutation that knows the target's format to `data` (which may leave it
    /// unchanged where the input does not have the structure the mutation looks for).
    pub fn mutate(self, data: &mut Vec<u8>, rng: &mut SmallRng) {
        match self {
            Target::Csv => csv::mutate(data, rng),
            Target::Safetensors => safetensors::mutate(data, rng),
            Target::Dly => dly::mutate(data, rng),
            Target::Geotiff => geotiff::mutate(data, rng),
            Target::Arch => arch::mutate(data, rng),
            Target::Onnx => onnx::mutate(data, rng),
            Target::Selftest => {}
        }
    }

    /// Tokens of the format that the byte-level mutations insert and overwrite with.
    pub fn dictionary(self) -> &'static [&'static [u8]] {
        match self {
            Target::Csv => csv::DICTIONARY,
            Target::Safetensors => safetensors::DICTIONARY,
            Target::Dly => dly::DICTIONARY,
            Target::Geotiff => geotiff::DICTIONARY,
            Target::Arch => arch::DICTIONARY,
            Target::Onnx => onnx::DICTIONARY,
            Target::Selftest => &[],
        }
    }

    /// The longest input worth making for the target: a SPEC is a command-line argument, so
    /// 16 KiB is plenty (and keeps the rate up); files get 1 MiB.
    pub fn max_len(self) -> usize {
        match self {
            Target::Arch => 16 << 10,
            _ => 1 << 20,
        }
    }

    /// The committed seed corpus, `crates/ntk-fuzz/corpus/NAME/`: valid inputs only.
    pub fn corpus_dir(self) -> PathBuf {
        crate_dir().join("corpus").join(self.name())
    }

    /// The committed regression inputs, `crates/ntk-fuzz/regressions/NAME/`: every finding,
    /// once fixed.
    pub fn regressions_dir(self) -> PathBuf {
        crate_dir().join("regressions").join(self.name())
    }

    /// Seeds that live in code rather than in [`Target::corpus_dir`].
    pub fn builtin_seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::Selftest => selftest::seeds(),
            _ => Vec::new(),
        }
    }

    /// The seeds that are generated rather than written by hand (binary formats), as
    /// (file name, bytes): `ntk-fuzz seeds` writes them into [`Target::corpus_dir`].
    pub fn generated_seeds(self) -> Vec<(String, Vec<u8>)> {
        match self {
            Target::Safetensors => safetensors::generated_seeds(),
            Target::Geotiff => geotiff::generated_seeds(),
            _ => Vec::new(),
        }
    }
}

/// The folder of this crate.
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A parser's message on one line: where a target answers for several parsers, it gives a
/// line each, and a message may quote input with line breaks in it.
pub(crate) fn one_line(message: &str) -> String {
    message.replace(['\n', '\r'], " ")
}

/// A coarse size class, `⌈log2(n + 1)⌉`, so that outcome descriptions tell sizes apart by
/// order of magnitude only.
pub(crate) fn size_class(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

/// The byte range of `data` between separators `sep` that holds index `at`.
pub(crate) fn field_around(data: &[u8], at: usize, sep: impl Fn(u8) -> bool) -> (usize, usize) {
    let start = data[..at]
        .iter()
        .rposition(|&b| sep(b))
        .map_or(0, |i| i + 1);
    let end = data[at..]
        .iter()
        .position(|&b| sep(b))
        .map_or(data.len(), |i| at + i);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_size_classes() {
        assert_eq!(field_around(b"ab,cd,ef", 4, |b| b == b','), (3, 5));
        assert_eq!(field_around(b"ab,cd", 0, |b| b == b','), (0, 2));
        assert_eq!(field_around(b"ab,", 3, |b| b == b','), (3, 3));
        assert_eq!([0, 1, 2, 3, 4, 1000].map(size_class), [0, 1, 2, 2, 3, 10]);
    }
}
