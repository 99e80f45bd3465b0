//! `cs-probe`: the `probe` tool (`examples/probe.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/probe.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
