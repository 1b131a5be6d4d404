//! Lines for the operator's terminal. Unlike `println!`, writing here never
//! panics when stdout is gone (`rollback-guard serve | head -n1`, a log
//! shipper that restarts): a server must outlive its reader.

use std::io::Write;

/// Writes one line to stdout; a closed or failing stdout is ignored.
pub fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

/// `println!` that never panics: `say!("listening on {addr}")`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::runtime::console::say(format_args!($($arg)*))
    };
}
