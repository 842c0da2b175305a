//! A progress line on standard error for runs longer than about two seconds.
//!
//! The line appears only after a delay (a short run prints nothing), only when standard
//! error is a terminal (indicatif's own rule), and never with `--quiet`.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// After this long without finishing, the progress line appears.
pub const DELAY: Duration = Duration::from_secs(2);

/// A spinner with a message (what runs, its size and estimate) and the elapsed time.
pub struct Progress {
    bar: ProgressBar,
    done: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// Starts a hidden spinner that shows itself on standard error after [`DELAY`], unless
    /// `quiet`.
    pub fn start(message: String, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
            .with_style(
                ProgressStyle::with_template("{spinner} ntk: {msg} ({elapsed})")
                    .expect("a valid template"),
            )
            .with_message(message);
        if quiet {
            return Self { bar, done: None };
        }
        let (tx, rx) = mpsc::channel();
        let shown = bar.clone();
        let handle = std::thread::spawn(move || {
            if rx.recv_timeout(DELAY) == Err(RecvTimeoutError::Timeout) {
                shown.set_draw_target(ProgressDrawTarget::stderr());
                shown.enable_steady_tick(Duration::from_millis(200));
                let _ = rx.recv();
            }
        });
        Self {
            bar,
            done: Some((tx, handle)),
        }
    }

    /// Replaces the message (the phase of the run).
    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }
}

impl Drop for Progress {
    /// Stops the spinner and clears its line.
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.done.take() {
            let _ = tx.send(());
            let _ = handle.join();
        }
        self.bar.finish_and_clear();
    }
}
