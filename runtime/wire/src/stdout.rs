//! Standard output that survives its reader going away. `println!` panics when stdout is a
//! closed pipe (`floe audit | head -1`); these macros end the program quietly with success
//! instead, as `head` expects of the writer, and any other write error ends it with a message.
//! Both CLIs (`floe`, `floed`) use them: `#[macro_use] extern crate floe_wire;`.

use std::io::Write;

/// Writes formatted text to stdout and flushes it; see the module documentation.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` that does not panic on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that does not panic on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}
