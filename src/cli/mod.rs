//! The command line. Filled in by the runtime work.

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    0
}
