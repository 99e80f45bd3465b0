//! `cs-diagnose`: the `diagnose` tool (`examples/diagnose.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/diagnose.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
