//! The architecture SPEC: `widths:activation`, e.g. `1-40-40-1:tanh`.

use std::fmt;
use std::str::FromStr;

/// An activation named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationName {
    /// `tanh`
    Tanh,
    /// `relu`
    Relu,
    /// `elu`
    Elu,
    /// `gelu`
    Gelu,
    /// `sigmoid`
    Sigmoid,
    /// `softplus`
    Softplus,
}

impl ActivationName {
    const ALL: [(&'static str, ActivationName); 6] = [
        ("tanh", ActivationName::Tanh),
        ("relu", ActivationName::Relu),
        ("elu", ActivationName::Elu),
        ("gelu", ActivationName::Gelu),
        ("sigmoid", ActivationName::Sigmoid),
        ("softplus", ActivationName::Softplus),
    ];
}

/// A parsed architecture: Linear layers of `widths`, `activation` between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchConfig {
    /// Layer widths, inputs first, outputs last (at least two).
    pub widths: Vec<usize>,
    /// The activation between layers.
    pub activation: ActivationName,
}

impl FromStr for ArchConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (widths, act) = s.split_once(':').ok_or_else(|| {
            format!("architecture `{s}` must look like WIDTHS:ACTIVATION, e.g. 1-40-40-1:tanh")
        })?;
        let widths = widths
            .split('-')
            .map(|w| match w.trim().parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "architecture `{s}`: width `{w}` is not a positive integer"
                )),
                Ok(v) => Ok(v),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if widths.len() < 2 {
            return Err(format!(
                "architecture `{s}` needs at least an input and an output width"
            ));
        }
        let activation = ActivationName::ALL
            .iter()
            .find(|(name, _)| *name == act.trim())
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                format!(
                    "unknown activation `{act}`; use one of {}",
                    ActivationName::ALL.map(|(n, _)| n).join(", ")
                )
            })?;
        Ok(Self { widths, activation })
    }
}

impl fmt::Display for ArchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w: Vec<String> = self.widths.iter().map(|w| w.to_string()).collect();
        let name = ActivationName::ALL
            .iter()
            .find(|(_, a)| *a == self.activation)
            .map_or("?", |(n, _)| n);
        write!(f, "{}:{name}", w.join("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let a: ArchConfig = "1-40-40-1:tanh".parse().unwrap();
        assert_eq!(a.widths, vec![1, 40, 40, 1]);
        assert_eq!(a.activation, ActivationName::Tanh);
        assert_eq!(a.to_string(), "1-40-40-1:tanh");
        assert_eq!(
            "3-64-64-1:relu".parse::<ArchConfig>().unwrap().activation,
            ActivationName::Relu
        );
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        assert!(
            "1-40-1"
                .parse::<ArchConfig>()
                .unwrap_err()
                .contains("WIDTHS:ACTIVATION")
        );
        assert!(
            "1-x-1:tanh"
                .parse::<ArchConfig>()
                .unwrap_err()
                .contains("`x`")
        );
        assert!(
            "1-0-1:tanh"
                .parse::<ArchConfig>()
                .unwrap_err()
                .contains("`0`")
        );
        assert!(
            "4:tanh"
                .parse::<ArchConfig>()
                .unwrap_err()
                .contains("at least")
        );
        let e = "1-4-1:swish".parse::<ArchConfig>().unwrap_err();
        assert!(
            e.contains("unknown activation `swish`") && e.contains("softplus"),
            "{e}"
        );
    }
}
