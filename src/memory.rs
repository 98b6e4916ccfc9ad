//! Keeps an idle daemon's resident memory small on glibc.
//!
//! glibc's malloc gives each thread that allocates its own arena (up to 8 per core) and
//! returns freed memory to the kernel only from the top of each heap, so the buffers of
//! a pass over many clients stay resident while the daemon sleeps for hours. Two arenas
//! are enough for two runtime workers and the short-lived blocking threads, and after a
//! batch of passes the freed pages are handed back. Elsewhere (musl) both calls do
//! nothing.
//!
//! Not here: what is allocated (that is every other module).
#![allow(unsafe_code)]

/// Caps malloc at two arenas. Call once, before the runtime starts its threads.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; M_ARENA_MAX takes any positive
    // count, and no allocation is in flight on another thread this early.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free pages of every malloc arena to the kernel (after a batch of passes).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself and is safe to call from any
    // thread at any time; 0 keeps no extra padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_calls_can_be_made_more_than_once() {
        limit_arenas();
        release_freed();
        let kept = vec![1u8; 1 << 20];
        drop(kept);
        release_freed();
        limit_arenas();
    }
}
