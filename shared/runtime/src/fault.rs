//! Fault injection for crash tests. With `MEND_FAULT=<point>` in its
//! environment, the process aborts (as abruptly as a SIGKILL: no flush, no
//! commit, no shutdown) the first time it reaches that named point. Unset,
//! a point costs one comparison.
//!
//! Points: `applier.before_apply`, `applier.after_apply`,
//! `applier.mid_replay`, `applier.after_replay`, `runner.after_deliver.<service>`.

use std::sync::OnceLock;

/// Aborts here when `MEND_FAULT` names this point.
pub fn point(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    if POINT.get_or_init(|| std::env::var("MEND_FAULT").ok().filter(|p| !p.is_empty())).as_deref() == Some(name) {
        eprintln!("mend: fault injected at {name} (MEND_FAULT): aborting");
        std::process::abort();
    }
}
