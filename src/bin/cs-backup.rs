//! `cs-backup`: the `backup` tool (`examples/backup.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/backup.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
