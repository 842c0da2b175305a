//! Replays the committed inputs: every seed (`corpus/TARGET/`) must be accepted, and every
//! regression input (`regressions/TARGET/`, a fixed finding) must be answered without a
//! panic.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ntk_fuzz::Target;
use ntk_fuzz::engine::load_inputs;

#[test]
fn seeds_are_accepted_and_regressions_answered() {
    let mut failures = Vec::new();
    for target in Target::ALL {
        let seeds = load_inputs(&target.corpus_dir());
        assert!(
            seeds.len() >= 3,
            "{}: only {} seeds",
            target.name(),
            seeds.len()
        );
        for (path, data) in seeds {
            match catch_unwind(AssertUnwindSafe(|| target.run(&data))) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => failures.push(format!("{}: a seed is refused: {e}", path.display())),
                Err(_) => failures.push(format!("{}: panicked (see above)", path.display())),
            }
        }
        for (path, data) in load_inputs(&target.regressions_dir()) {
            if catch_unwind(AssertUnwindSafe(|| target.run(&data))).is_err() {
                failures.push(format!("{}: panicked (see above)", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn generated_seeds_are_committed() {
    for target in Target::ALL {
        for (name, _) in target.generated_seeds() {
            let path = target.corpus_dir().join(&name);
            assert!(
                path.is_file(),
                "{} is missing: run `cargo run -p ntk-fuzz -- seeds`",
                path.display()
            );
        }
    }
}
