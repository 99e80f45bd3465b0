//! `cs-upgrade`: the `upgrade` tool (`examples/upgrade.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/upgrade.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
