//! `cs-restore`: the `restore` tool (`examples/restore.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/restore.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
