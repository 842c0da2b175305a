//! The layer check: workspace crates only depend on the layers below them.
//!
//! `bench → gp → ops → krylov`; the CLI sits beside bench, and the fuzzing harness
//! (ntk-fuzz) and the end-to-end tests (ntk-tests, the `tests/` folder) on top of everything,
//! bench and the CLI included. krylov must also stay
//! free of burn (and of cubecl, burn's GPU runtime) so it is usable on its own.

use std::process::Command;

use serde_json::Value;

/// One workspace crate: the workspace crates it may use and the external
/// crate-name prefixes it must not use.
struct Layer {
    name: &'static str,
    may_use: &'static [&'static str],
    forbidden_prefixes: &'static [&'static str],
}

const LAYERS: &[Layer] = &[
    Layer {
        name: "ntk-krylov",
        may_use: &[],
        forbidden_prefixes: &["burn", "cubecl"],
    },
    Layer {
        name: "ntk-ops",
        may_use: &["ntk-krylov"],
        forbidden_prefixes: &[],
    },
    Layer {
        name: "ntk-gp",
        may_use: &["ntk-ops", "ntk-krylov"],
        forbidden_prefixes: &[],
    },
    Layer {
        name: "ntk-bench",
        may_use: &["ntk-gp", "ntk-ops", "ntk-krylov"],
        forbidden_prefixes: &[],
    },
    Layer {
        name: "ntk-cli",
        may_use: &["ntk-gp", "ntk-ops", "ntk-krylov"],
        forbidden_prefixes: &[],
    },
    Layer {
        name: "ntk-fuzz",
        may_use: &["ntk-cli", "ntk-bench", "ntk-gp", "ntk-ops", "ntk-krylov"],
        forbidden_prefixes: &[],
    },
    Layer {
        name: "ntk-tests",
        may_use: &["ntk-cli", "ntk-bench", "ntk-gp", "ntk-ops", "ntk-krylov"],
        forbidden_prefixes: &[],
    },
    Layer {
        name: "xtask",
        may_use: &[],
        forbidden_prefixes: &[],
    },
];

/// Reads `cargo metadata` for the workspace and checks every crate's
/// dependencies (normal, build and dev) against [`LAYERS`].
pub fn check_workspace() -> Result<(), String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(crate::root())
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let violations = violations(&meta)?;
    if violations.is_empty() {
        eprintln!("layers: ok (bench → gp → ops → krylov)");
        Ok(())
    } else {
        Err(format!(
            "layer check failed:\n  {}",
            violations.join("\n  ")
        ))
    }
}

/// Every broken rule in `meta` (the JSON of `cargo metadata --no-deps`).
fn violations(meta: &Value) -> Result<Vec<String>, String> {
    let packages = meta["packages"]
        .as_array()
        .ok_or("cargo metadata has no `packages` array")?;
    let workspace: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut found = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or("<unnamed>");
        let Some(layer) = LAYERS.iter().find(|l| l.name == name) else {
            found.push(format!(
                "{name} is not in the layer table (xtask/src/layers.rs): add it"
            ));
            continue;
        };
        let deps = package["dependencies"].as_array().map_or(&[][..], |d| d);
        for dep in deps {
            let dep_name = dep["name"].as_str().unwrap_or("<unnamed>");
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if workspace.contains(&dep_name) && !layer.may_use.contains(&dep_name) {
                found.push(format!(
                    "{name} depends on {dep_name} ({kind}): only {:?} are allowed",
                    layer.may_use
                ));
            }
            if let Some(prefix) = layer
                .forbidden_prefixes
                .iter()
                .find(|p| dep_name.starts_with(*p))
            {
                found.push(format!(
                    "{name} depends on {dep_name} ({kind}): `{prefix}*` crates are forbidden there"
                ));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(deps: &[(&str, &[&str])]) -> Value {
        let packages: Vec<Value> = deps
            .iter()
            .map(|(name, ds)| {
                json!({
                    "name": name,
                    "dependencies": ds.iter().map(|d| json!({"name": d, "kind": null})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "packages": packages })
    }

    #[test]
    fn the_intended_layering_passes() {
        let m = meta(&[
            ("ntk-krylov", &["nalgebra"]),
            ("ntk-ops", &["ntk-krylov", "burn"]),
            ("ntk-gp", &["ntk-ops", "ntk-krylov"]),
            ("ntk-bench", &["ntk-gp", "ntk-ops", "ntk-krylov"]),
            ("ntk-cli", &["ntk-gp", "ntk-ops"]),
            ("ntk-fuzz", &["ntk-cli", "ntk-bench", "ntk-ops"]),
            ("xtask", &["clap"]),
        ]);
        assert_eq!(violations(&m).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn an_upward_dependency_fails() {
        let m = meta(&[
            ("ntk-krylov", &[]),
            ("ntk-ops", &["ntk-gp"]),
            ("ntk-gp", &[]),
        ]);
        let v = violations(&m).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("ntk-ops depends on ntk-gp"));
    }

    #[test]
    fn burn_in_krylov_fails() {
        let m = meta(&[("ntk-krylov", &["burn-tensor"])]);
        let v = violations(&m).unwrap();
        assert!(v[0].contains("`burn*` crates are forbidden"), "{v:?}");
    }

    #[test]
    fn an_unknown_workspace_crate_fails() {
        let m = meta(&[("ntk-surprise", &[])]);
        assert!(violations(&m).unwrap()[0].contains("not in the layer table"));
    }
}
