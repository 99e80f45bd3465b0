//! `cs-harden`: the `harden` tool (`examples/harden.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/harden.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
