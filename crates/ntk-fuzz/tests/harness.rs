//! The harness finds what it must: the self-test target's planted panic, failed allocation
//! (under the memory cap), stack overflow and hang each become a finding with its input
//! saved, and the fuzzing run exits 1.

use std::process::Command;

#[test]
fn planted_bugs_become_findings() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ntk-fuzz"))
        .args([
            "fuzz",
            "--seconds",
            "3",
            "--timeout-ms",
            "400",
            "--seed",
            "1",
        ])
        .arg("--out")
        .arg(out.path())
        .arg("selftest")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stdout}\n{stderr}");
    for expected in [
        "Panic (",
        "planted panic",
        "memory allocation of 68719476736 bytes failed",
        "overflowed its stack",
        "Hang",
    ] {
        assert!(
            stdout.contains(expected),
            "no `{expected}` in:\n{stdout}\n{stderr}"
        );
    }
    let crashes = out.path().join("crashes/selftest");
    let saved: Vec<Vec<u8>> = std::fs::read_dir(&crashes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none())
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let planted = [&b"panic"[..], b"alloc", b"stack", b"hang"];
    for seed in planted {
        assert!(saved.iter().any(|s| s == seed), "{seed:?} not saved");
    }
    for s in &saved {
        assert!(planted.iter().any(|p| s.starts_with(p)), "{s:?} saved");
    }
}
