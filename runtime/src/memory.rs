//! The process's heap, tuned for a long-running host on a small box: few glibc arenas, and
//! what a plugin compilation freed handed back to the system rather than kept resident.

/// glibc gives every thread that allocates its own arena (up to 8 per core), and keeps what
/// those arenas once held: the blocking threads a Twinzo outage's replay wakes made resident
/// memory creep up by a megabyte or two per outage in the soak (bench/soak), flat with two
/// arenas. Call before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the heap's free pages to the system. Compiling a plugin with cranelift allocates
/// and frees about 4 MB per plugin; glibc keeps the freed pages, so a process that compiled
/// three plugins at start-up stayed 12 MB larger than one that loaded them from the cache
/// (docs/performance.md, "Memory"). Takes a few milliseconds: call it after a compilation,
/// not on a message path.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
