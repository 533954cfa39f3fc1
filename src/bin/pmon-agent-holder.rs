//! The `pmon-agent-holder` executable: a run's holder, which `pmon-agent`
//! starts for `wrap` and for each run of a daemon (see
//! `holder/own_process.rs` for why it is an executable of its own).

fn main() -> std::process::ExitCode {
    pmon_agent::holder_main()
}
