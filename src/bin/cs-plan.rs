//! `cs-plan`: the `plan` tool (`examples/plan.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/plan.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
