//! `cs-preflight`: the `preflight` tool (`examples/preflight.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/preflight.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
