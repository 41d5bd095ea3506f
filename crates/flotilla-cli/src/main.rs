//! The `flotilla` binary; see the `flotilla_cli` library for the commands.

fn main() -> std::process::ExitCode {
    flotilla_cli::main()
}
