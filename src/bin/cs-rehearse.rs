//! `cs-rehearse`: the `rehearse` tool (`examples/rehearse.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/rehearse.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
