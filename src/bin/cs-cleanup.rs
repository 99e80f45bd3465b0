//! `cs-cleanup`: the `cleanup` tool (`examples/cleanup.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/cleanup.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
