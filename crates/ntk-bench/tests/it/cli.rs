//! `ntk-bench reproduce` exit codes: unknown names, paper experiments not yet available,
//! nothing available at all, and devices that cannot be used.

use std::process::{Command, Output};

fn reproduce(args: &[&str]) -> Output {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ntk-bench"))
        .arg("reproduce")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    // Nothing may be written when nothing ran.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    output
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_name_exits_2_with_the_list() {
    let o = reproduce(&["nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown experiment `nope`"));
    assert!(stderr(&o).contains("sinusoid, precipitation, malaria, scaling, fisher"));
}

#[test]
fn paper_experiment_not_yet_available_exits_1() {
    let missing = ntk_bench::PAPER_EXPERIMENTS
        .iter()
        .find(|e| !ntk_bench::EXPERIMENTS.contains(e));
    if let Some(name) = missing {
        let o = reproduce(&[name, "--quick"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(&format!("`{name}` is not implemented yet")));
    }
}

#[test]
fn an_unusable_device_exits_2_with_one_line_before_anything_runs() {
    // Without the feature any CUDA device is refused; with it, an index no machine has.
    let (device, needle) = if cfg!(feature = "cuda") {
        ("cuda:4096", "device `cuda:4096`: CUDA is not available (")
    } else {
        (
            "cuda",
            "device `cuda:0`: built without the `cuda` feature; rebuild with --features cuda",
        )
    };
    for (args, needle) in [
        (["sinusoid", "--quick", "--device", device], needle),
        (
            ["sinusoid", "--quick", "--device", "tpu"],
            "unknown device `tpu`; use cpu or cuda[:i]",
        ),
    ] {
        let o = reproduce(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_ntk-bench"))
        .args(["device-bench", "--device", device, "--n", "10"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(needle), "{}", stderr(&o));
}
