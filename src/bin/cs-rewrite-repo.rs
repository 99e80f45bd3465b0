//! `cs-rewrite-repo`: the `rewrite-repo` tool (`examples/rewrite-repo.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/rewrite-repo.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
