//! `cs-agent-facts`: the `agent-facts` tool (`examples/agent-facts.rs`, one source for both), installed under a name
//! that cannot clash with a system command.

#[path = "../../examples/agent-facts.rs"]
mod tool;

fn main() -> std::process::ExitCode {
    tool::main()
}
