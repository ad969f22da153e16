//! The progress bar of long operator commands: on stderr, so stdout stays the
//! command's output, and only on a terminal (hidden in pipes, CI and tests).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TEMPLATE: &str = "{prefix} [{bar:40}] {human_pos}/{human_len} events, {per_sec}, ETA {eta} {msg}";

/// A bar counting events, with their rate and the time left.
pub fn events_bar(prefix: &'static str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target).with_prefix(prefix);
    if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
