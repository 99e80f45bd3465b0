//! `cs-verify`: the `verify` tool (`examples/verify.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/verify.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
