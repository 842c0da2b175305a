//! The harness's own check (hidden): inputs that panic, abort on a failed allocation,
//! overflow the stack and hang, so that a test can see each become a finding.

use std::hint::black_box;

/// The planted bugs, keyed by the input's first bytes.
pub fn run(data: &[u8]) -> super::Outcome {
    if data.starts_with(b"panic") {
        panic!("planted panic");
    }
    if data.starts_with(b"alloc") {
        // 64 GiB: refused under the runner's memory cap, so the process aborts.
        let v: Vec<u8> = Vec::with_capacity(black_box(64 << 30));
        black_box(&v);
    }
    if data.starts_with(b"stack") {
        black_box(recurse(black_box(0)));
    }
    if data.starts_with(b"hang") {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Err("no planted bug".into())
}

/// Recursion without end (in practice: `u64::MAX` is never reached).
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = black_box([depth; 32]);
    frame[1] + recurse(depth + 1)
}

/// One seed per planted bug, and a harmless one.
pub fn seeds() -> Vec<Vec<u8>> {
    ["fine", "panic", "alloc", "stack", "hang"]
        .map(|s| s.as_bytes().to_vec())
        .to_vec()
}
