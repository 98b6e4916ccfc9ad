//! Keeps an idle daemon's resident memory small on glibc.
//!
//! glibc's malloc gives each thread that allocates its own arena (up to 8 per core) and
//! returns freed memory to the kernel only from the top of each heap, so the buffers of
//! a pass over many clients stay resident while the daemon sleeps for hours. Two arenas
//! are enough for two runtime workers and the short-lived blocking threads, and after a
//! batch of passes the freed pages are handed back. Elsewhere (musl) both calls do
//! nothing.
//!
//! The other half of an idle daemon's resident set is its own code: parsing the policy,
//! the start pass and its HTTP and TLS stacks touch megabytes of the executable that
//! nothing runs again until the next pass, hours later. After a batch the daemon asks the
//! kernel to reclaim those pages (`MADV_PAGEOUT`, Linux 5.4+); they are clean copies of
//! the file, read back on the next fault, and a page another process maps too is left
//! alone by the kernel. Not here: what is allocated (that is every other module).
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

/// Asks the kernel to reclaim the resident pages of this executable's read-only mappings
/// (its code and constants), which an idle daemon does not touch until its next pass.
/// Best effort: a kernel without `MADV_PAGEOUT` answers EINVAL and nothing changes. Only
/// those mappings are named, never a writable one, the heap or a stack: no secret lives
/// in them, so none can reach swap this way, and a page-out never changes what a page
/// holds.
pub fn page_out_code() {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(maps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/maps"),
        ) else {
            return;
        };
        for (start, end) in mappings_of(&maps, &exe.to_string_lossy()) {
            // SAFETY: [start, end) is a whole mapping of this process, page aligned as
            // /proc/self/maps gives it; MADV_PAGEOUT only reclaims, the contents stay
            // as they were (clean file pages are read back on the next access).
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
            }
        }
    }
}

/// The address ranges of the read-only mappings of the file `path` in /proc/self/maps
/// text `maps`.
#[cfg(target_os = "linux")]
fn mappings_of(maps: &str, path: &str) -> Vec<(usize, usize)> {
    maps.lines()
        // The path is the line's last field, after padding; it may hold spaces.
        .filter(|line| {
            line.strip_suffix(path)
                .is_some_and(|head| head.ends_with(' '))
        })
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            if perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
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

    #[test]
    fn code_can_be_paged_out_and_runs_on() {
        page_out_code();
        page_out_code();
        let back: Vec<u64> = (1..=3).collect();
        assert_eq!(back.iter().sum::<u64>(), 6);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_executables_own_mappings_are_named() {
        let maps = "\
55d0c0000000-55d0c0310000 r--p 00000000 fe:00 1234      /usr/bin/cds-rotator
55d0c0311000-55d0c0eab000 r-xp 00310000 fe:00 1234      /usr/bin/cds-rotator
55d0c0eab000-55d0c0f31000 rw-p 00ea9000 fe:00 1234      /usr/bin/cds-rotator
55d0c0f00000-55d0c0f40000 rw-p 00000000 00:00 0         [heap]
7f0000000000-7f0000001000 r-xp 00000000 fe:00 99        /usr/bin/cds-rotator-old
7f0000002000-7f0000003000 r-xp 00000000 fe:00 98        /opt/x/usr/bin/cds-rotator
7f0000004000-7f0000005000 r-xp 00000000 fe:00 97        /srv/with space/cds-rotator
";
        assert_eq!(
            mappings_of(maps, "/usr/bin/cds-rotator"),
            vec![
                (0x55d0c0000000, 0x55d0c0310000),
                (0x55d0c0311000, 0x55d0c0eab000)
            ]
        );
        assert_eq!(
            mappings_of(maps, "/srv/with space/cds-rotator"),
            vec![(0x7f0000004000, 0x7f0000005000)]
        );
    }
}
