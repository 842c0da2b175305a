//! `ntk-bench reproduce scaling --distributed`: over threads as ranks (always), and over MPI
//! processes under `mpirun -np 2` and `-np 4` when built with the `mpi` feature and `mpirun`
//! is installed (skipped with the reason printed otherwise). Each run's rank 0 solves on one
//! process as well (`--check`); the log marginal likelihood must agree to 1e-10 relative with
//! the same CG iterations.

use std::path::Path;
use std::process::Command;

/// Reads `ranks-N.json` and checks every row against its single-process solve.
fn check_rows(out: &Path, ranks: usize) {
    let path = out.join(format!("scaling-distributed/ranks-{ranks}.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "the quick profile's three sizes");
    for row in rows {
        assert_eq!(row["ranks"].as_u64(), Some(ranks as u64));
        let check = &row["check"];
        let diff = check["lml_rel_diff"].as_f64().unwrap();
        assert!(
            diff < 1e-10,
            "{ranks} ranks, n = {}: Δ = {diff:e}",
            row["n"]
        );
        assert_eq!(check["cg_iterations"], row["cg_iterations"]);
        let per_rank = row["per_rank"].as_array().unwrap();
        assert_eq!(per_rank.len(), ranks);
        let rows_held: u64 = per_rank.iter().map(|r| r["rows"].as_u64().unwrap()).sum();
        assert_eq!(Some(rows_held), row["n"].as_u64());
        if ranks > 1 {
            assert!(row["bytes_per_iteration"].as_f64().unwrap() > 0.0);
        }
    }
}

fn reproduce(launcher: Option<(&str, usize)>, extra: &[&str], out: &Path) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_ntk-bench");
    let mut cmd = match launcher {
        Some((mpirun, np)) => {
            let mut c = Command::new(mpirun);
            c.args(["--oversubscribe", "-np", &np.to_string(), bin])
                // As root (containers, CI), Open MPI refuses to start without these.
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
            c
        }
        None => Command::new(bin),
    };
    cmd.args([
        "reproduce",
        "scaling",
        "--quick",
        "--distributed",
        "--check",
        "--out",
    ])
    .arg(out)
    .args(extra)
    .output()
    .unwrap()
}

#[test]
fn threads_as_ranks_give_the_single_process_numbers() {
    let out = tempfile::tempdir().unwrap();
    for ranks in [1, 3] {
        let o = reproduce(None, &["--threads", &ranks.to_string()], out.path());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        check_rows(out.path(), ranks);
        let table = String::from_utf8_lossy(&o.stdout);
        assert!(
            table.contains("comm share") && table.contains("rank 0:"),
            "{table}"
        );
    }
}

#[test]
fn distributed_needs_the_scaling_experiment() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ntk-bench"))
        .args(["reproduce", "malaria", "--distributed", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`scaling` experiment only"));
}

/// `mpirun` on the PATH, if any.
#[cfg(feature = "mpi")]
fn mpirun() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("mpirun"))
        .find(|p| p.is_file())
}

#[cfg(feature = "mpi")]
#[test]
fn mpi_processes_give_the_single_process_numbers() {
    let Some(mpirun) = mpirun() else {
        println!("skipped: `mpirun` is not on the PATH (Debian: apt install openmpi-bin)");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    for np in [2, 4] {
        let o = reproduce(Some((mpirun.to_str().unwrap(), np)), &[], out.path());
        assert!(
            o.status.success(),
            "mpirun -np {np}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        check_rows(out.path(), np);
    }
}

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_processes_give_the_single_process_numbers() {
    println!(
        "skipped: built without the `mpi` feature \
         (cargo test -p ntk-bench --features mpi --test it distributed)"
    );
}
