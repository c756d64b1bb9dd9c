//! The `edge` binary: parses the command line and hands over to `edge::cli`.

fn main() -> std::process::ExitCode {
    edge::memory::limit_malloc_arenas();
    edge::cli::main()
}
