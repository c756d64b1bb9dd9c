//! The `edge` binary: parses the command line and hands over to `edge::cli`.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    edge::cli::main()
}

/// glibc gives every thread that allocates its own arena (up to 8 per core), and keeps what
/// those arenas once held: the blocking threads a Twinzo outage's replay wakes made resident
/// memory creep up by a megabyte or two per outage in the soak (bench/soak), flat with two
/// arenas. Set before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
