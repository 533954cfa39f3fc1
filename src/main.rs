//! The `pmon-agent` executable: everything is in the library (`lib.rs`).

fn main() -> std::process::ExitCode {
    pmon_agent::main()
}
