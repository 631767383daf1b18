//! Memory on 2 MiB pages (Linux, transparent huge pages): the state's arena, the bench's probe
//! buffers, and the mapped weights.
//!
//! Decoding streams the whole mapping once per token, and how fast one core streams it depends
//! on its page size: on the Zen 4 host of the twenty-second session, one thread decoded the 110M
//! q4_0_pure file 1.3× faster mapped with 2 MiB pages than with 4 KiB ones (fraction of the
//! model-size probe 64–71% against 47–50%, alternating processes; a 4 KiB page is a TLB miss
//! every 64 lines and a stop for the hardware prefetcher, which does not cross pages).
//!
//! A file mapping gets 2 MiB pages where the page cache holds the file in 2 MiB pieces
//! ("folios"), and which pieces it holds is decided when the file enters the cache: read
//! through a mapping advised `MADV_HUGEPAGE` (as [`Transformer`](crate::Transformer) maps
//! weights), it comes in 2 MiB pieces; written in small writes (a download, a copy) or read
//! without that advice, in small ones, and it stays so, however later mappings are advised,
//! until Linux drops it. (`MADV_COLLAPSE` would merge them, but Linux 6.18 refuses it for a
//! file on ext4.) So `Transformer::open` looks at a sample of the cached file and, where
//! the cache holds it in small pieces, drops them (after writing back any not yet written:
//! nothing is lost, they are read again from the file at their first use, then in 2 MiB
//! pieces). `TVL_HUGE_PAGES=off` leaves the mapping and the page cache as they are.

use memmap2::Mmap;
use std::fs::File;

/// 2 MiB: the huge page size of x86_64 and of aarch64 with 4 KiB base pages.
const HUGE: usize = 2 << 20;

/// Regions of a mapping looked at by [`prefer_huge_pages`] at most (each costs one page fault
/// of a cached page, a few microseconds).
const SAMPLED_REGIONS: usize = 64;

/// What opening a model found and did about its weights' pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightPages {
    /// Whole 2 MiB regions of the file that were in the page cache and looked at.
    pub sampled: usize,
    /// Those of them the page cache held in small pieces (mapped with 4 KiB pages).
    pub small: usize,
    /// Whether the cached pieces were dropped so that the weights are read again in 2 MiB
    /// pieces (at their first use: the first token after open reads the file). False where
    /// they stayed (a file in memory, on tmpfs, or one another process maps): then the
    /// small pieces are mapped with 4 KiB pages.
    pub dropped: bool,
    /// `TVL_HUGE_PAGES=off`: nothing was advised or looked at.
    pub off: bool,
}

impl WeightPages {
    /// One line for reports.
    pub fn describe(&self) -> String {
        match (self.off, self.dropped) {
            (true, _) => "left as they are (TVL_HUGE_PAGES=off)".into(),
            (false, true) => format!(
                "the page cache held {} of {} sampled 2 MiB regions in small pieces: dropped at open, read again in 2 MiB pieces",
                self.small, self.sampled
            ),
            (false, false) if self.small > 0 => format!(
                "the page cache holds {} of {} sampled 2 MiB regions in small pieces and kept them (a file in memory, or \
                 mapped by another process): 4 KiB pages",
                self.small, self.sampled
            ),
            (false, false) if self.sampled == 0 => "advised onto 2 MiB pages; no whole 2 MiB region of it was cached at open".into(),
            (false, false) => format!("advised onto 2 MiB pages; {} sampled regions cached in 2 MiB pieces", self.sampled),
        }
    }
}

/// Whether `TVL_HUGE_PAGES` turns the weights' huge pages off (`off`; `on` or unset: on).
pub fn huge_pages_env() -> Result<bool, String> {
    match std::env::var("TVL_HUGE_PAGES").ok().filter(|v| !v.is_empty()).as_deref() {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(format!("TVL_HUGE_PAGES={other}: expected on or off")),
    }
}

/// Advises the weights' mapping onto huge pages; called right after mapping, before any page
/// of it is touched, so that whatever is not cached yet enters the cache in 2 MiB pieces.
pub(crate) fn advise_mapping(map: &Mmap) {
    advise_huge_pages(map.as_ptr().cast_mut(), map.len());
}

/// Looks at up to [`SAMPLED_REGIONS`] cached 2 MiB regions of `map` (advised by
/// [`advise_mapping`]; `file` is what it maps) and, if the page cache holds any of them in
/// small pieces, unmaps the whole mapping's pages and drops the file's cached pages, so that
/// they are read again in 2 MiB pieces at their first use. Only clean, unmapped pages are
/// dropped (`POSIX_FADV_DONTNEED`, after writing back any dirty ones): a file another process
/// maps keeps those pages as they are.
pub(crate) fn prefer_huge_pages(map: &Mmap, file: &File) -> WeightPages {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let start = map.as_ptr() as usize;
        let (first, last) = (start.next_multiple_of(HUGE), (start + map.len()) / HUGE * HUGE);
        if first >= last {
            return WeightPages::default();
        }
        let page = page_size();
        let mut resident = vec![0u8; map.len().div_ceil(page)];
        // SAFETY: `resident` has one byte per page of the mapping, which is mapped (`map`)
        // and page-aligned (mmap's result); mincore only writes that vector.
        if unsafe { libc::mincore(map.as_ptr().cast_mut().cast(), map.len(), resident.as_mut_ptr()) } != 0 {
            return WeightPages::default();
        }
        let regions = (last - first) / HUGE;
        let cached: Vec<usize> = (0..regions)
            .map(|r| first + r * HUGE)
            .filter(|&at| resident[(at - start) / page] & 1 == 1 && resident[(at + HUGE - 1 - start) / page] & 1 == 1)
            .collect();
        let step = cached.len().div_ceil(SAMPLED_REGIONS).max(1);
        let sampled: Vec<usize> = cached.iter().copied().step_by(step).collect();
        for &at in &sampled {
            // SAFETY: `at` lies inside the mapping (a whole region between its first and last
            // 2 MiB boundary); a volatile read so that the fault is not optimized away.
            unsafe { std::ptr::read_volatile(at as *const u8) };
        }
        // Over the whole mapping, whatever smaps splits it into (the advice covers the whole
        // regions only, so a partial last one is a mapping of its own there), so that every
        // count is taken whole. Besides the header's page, the sampled regions are the only
        // ones touched since the advice, so the PMD-mapped regions are among them.
        let huge_bytes = huge_page_fraction(start, map.len()) * map.len() as f64;
        let huge_regions = ((huge_bytes / HUGE as f64).round() as usize).min(sampled.len());
        let mut report =
            WeightPages { sampled: sampled.len(), small: sampled.len() - huge_regions, ..Default::default() };
        if report.small > 0 {
            // SAFETY: the mapping is read-only and shared: MADV_DONTNEED only removes its page
            // table entries, and the next access maps the same file bytes again. No borrow of
            // its contents is alive across this call (open has only validated the header).
            unsafe { libc::madvise(map.as_ptr().cast_mut().cast(), map.len(), libc::MADV_DONTNEED) };
            // Pages not yet written back (a file just downloaded or copied) cannot be dropped:
            // write them now, as Linux would within half a minute anyway.
            let _ = file.sync_data();
            // SAFETY: a plain system call on an open descriptor: advice about cached pages.
            let advised = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) } == 0;
            // Whether any sampled page left the cache: a file in memory (tmpfs) keeps them all,
            // and so does one that another process maps.
            let left = sampled.iter().any(|&at| {
                let mut resident = 0u8;
                // SAFETY: one page of the mapping (page-aligned, inside it), one byte written.
                unsafe { libc::mincore(at as *mut libc::c_void, page, &mut resident) == 0 && resident & 1 == 0 }
            });
            report.dropped = advised && left;
        }
        report
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (map, file);
        WeightPages::default()
    }
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// Asks Linux to back the whole 2 MiB pages inside `bytes` bytes from `start` with huge pages
/// when they are first touched (transparent huge pages in `madvise` mode, the usual default;
/// in `always` mode they are anyway). Elsewhere, or if the kernel declines, 4 KiB pages stay.
pub(crate) fn advise_huge_pages(start: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        let (first, last) = ((start as usize).next_multiple_of(HUGE), (start as usize + bytes) / HUGE * HUGE);
        if first < last {
            // SAFETY: the caller's allocation or mapping holds `start..start + bytes`, and the
            // range is rounded inwards to whole huge pages; MADV_HUGEPAGE only changes how its
            // pages are backed, not their contents or validity.
            unsafe { libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

/// The share of the `bytes` bytes from `start` that Linux backs with huge pages, from
/// `/proc/self/smaps` (NaN where it cannot be read). smaps counts huge pages per mapping, and a
/// mapping may hold more than this range (the kernel merges neighbours with the same flags),
/// so each mapping's count is taken in proportion to its overlap with the range.
pub fn huge_page_fraction(start: usize, bytes: usize) -> f64 {
    std::fs::read_to_string("/proc/self/smaps").map_or(f64::NAN, |smaps| huge_page_fraction_in(&smaps, start, bytes))
}

/// [`huge_page_fraction`] of a text in the format of `/proc/self/smaps`.
fn huge_page_fraction_in(smaps: &str, start: usize, bytes: usize) -> f64 {
    let end = start + bytes;
    let (mut huge, mut overlap) = (0.0, 0.0);
    for line in smaps.lines() {
        // A mapping starts with its range in hex, "start-end perms ..."; its fields follow.
        let range = line.split_once(' ').and_then(|(range, _)| range.split_once('-'));
        if let Some((Ok(first), Ok(last))) =
            range.map(|(a, b)| (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)))
        {
            let shared = last.min(end).saturating_sub(first.max(start));
            overlap = if last > first { shared as f64 / (last - first) as f64 } else { 0.0 };
            continue;
        }
        let field = line.strip_prefix("AnonHugePages:").or_else(|| line.strip_prefix("FilePmdMapped:"));
        if let Some(kb) = field.and_then(|f| f.trim().strip_suffix("kB")).and_then(|kb| kb.trim().parse::<f64>().ok()) {
            huge += kb * 1024.0 * overlap;
        }
    }
    (huge / bytes as f64).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three mappings as /proc/self/smaps lists them: 4 MiB of anonymous huge pages in an 8 MiB
    /// mapping, a file mapping with 2 MiB mapped by PMD, and one with none.
    const SMAPS: &str = "\
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
Size:               8192 kB
AnonHugePages:      4096 kB
FilePmdMapped:         0 kB
7f0000800000-7f0000c00000 r--s 00000000 fd:01 1234                       /tmp/model.tvl
Size:               4096 kB
AnonHugePages:         0 kB
FilePmdMapped:      2048 kB
7f0000c00000-7f0001000000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:         0 kB
";

    #[test]
    fn huge_pages_are_counted_in_proportion_to_the_range() {
        let mib = 1 << 20;
        let at = 0x7f00_0000_0000usize;
        // The whole first mapping: half of it.
        assert_eq!(huge_page_fraction_in(SMAPS, at, 8 * mib), 0.5);
        // Its second half: half of its 4 MiB taken in proportion, over 4 MiB.
        assert_eq!(huge_page_fraction_in(SMAPS, at + 4 * mib, 4 * mib), 0.5);
        // The file mapping: PMD-mapped pages count.
        assert_eq!(huge_page_fraction_in(SMAPS, at + 8 * mib, 4 * mib), 0.5);
        // The last mapping, and a range no mapping holds.
        assert_eq!(huge_page_fraction_in(SMAPS, at + 12 * mib, 4 * mib), 0.0);
        assert_eq!(huge_page_fraction_in(SMAPS, 0x1000, 4 * mib), 0.0);
        // All three: (4 + 2) of 16 MiB.
        assert_eq!(huge_page_fraction_in(SMAPS, at, 16 * mib), 6.0 / 16.0);
    }

    /// `len` bytes written `piece` bytes at a time and on disk (clean pages: only those can be
    /// dropped), then mapped and advised as the weights are; `check` gets the mapping and the
    /// file, and the file is removed after.
    #[cfg(target_os = "linux")]
    fn with_file_written_in(len: usize, piece: usize, check: impl FnOnce(&Mmap, &File)) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pages-test");
        with_file_in(&dir, len, piece, check)
    }

    /// [`with_file_written_in`] in `dir`.
    #[cfg(target_os = "linux")]
    fn with_file_in(dir: &std::path::Path, len: usize, piece: usize, check: impl FnOnce(&Mmap, &File)) {
        use std::io::Write;
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{len}-in-pieces-of-{piece}-{}.bin", std::process::id()));
        let bytes: Vec<u8> = (0..len).map(|i| (i / 4096 % 251) as u8).collect();
        let mut file = File::create(&path).unwrap();
        for piece in bytes.chunks(piece) {
            file.write_all(piece).unwrap();
        }
        file.sync_all().unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY: a read-only mapping of a file that this test alone writes, written before.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        advise_mapping(&map);
        check(&map, &file);
        assert!(map[..] == bytes[..], "the bytes changed");
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }

    /// The share of `map` on huge pages once every page of it has been read.
    #[cfg(target_os = "linux")]
    fn huge_after_reading(map: &Mmap) -> f64 {
        std::hint::black_box(map.iter().step_by(4096).map(|&b| b as u64).sum::<u64>());
        huge_page_fraction(map.as_ptr() as usize, map.len())
    }

    /// A file cached in small pieces (written 4 KiB at a time): [`prefer_huge_pages`] finds
    /// them, drops them, and the next reads bring the same bytes back on 2 MiB pages, as a file
    /// written in 2 MiB pieces has them from the start.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_cached_in_small_pieces_comes_back_on_huge_pages() {
        let mut written_huge = f64::NAN;
        with_file_written_in(16 << 20, 2 << 20, |map, _| written_huge = huge_after_reading(map));
        if written_huge.is_nan() || written_huge == 0.0 {
            println!("NOT TESTED: this kernel or filesystem maps no file with 2 MiB pages (written in 2 MiB pieces: {written_huge})");
            return;
        }
        assert!(written_huge > 0.4, "written in 2 MiB pieces: {:.0}% on huge pages", written_huge * 100.0);
        with_file_written_in(16 << 20, 4096, |map, file| {
            let report = prefer_huge_pages(map, file);
            let huge = huge_after_reading(map);
            println!(
                "written in 2 MiB pieces: {:.0}% huge; in 4 KiB: {report:?}, then {:.0}%",
                written_huge * 100.0,
                huge * 100.0
            );
            assert!(!report.off && report.sampled >= 7, "{report:?}: 16 MiB, at least 7 whole regions, all cached");
            assert!(report.small > 0 && report.dropped, "{report:?}: cached in small pieces, dropped");
            assert!(huge > 0.4, "{:.0}% on huge pages after dropping the small pieces", huge * 100.0);
        });
    }

    /// A file cached in 2 MiB pieces is left alone, also when its last 2 MiB are partial (two
    /// whole regions in a 6 MB mapping, whose tail smaps lists apart).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_cached_in_2_mib_pieces_is_left_alone() {
        with_file_written_in((6 << 20) - (64 << 10), 2 << 20, |map, file| {
            let report = prefer_huge_pages(map, file);
            let huge = huge_after_reading(map);
            println!("{report:?}, then {:.0}% on huge pages", huge * 100.0);
            if huge == 0.0 || huge.is_nan() {
                println!("NOT TESTED: this kernel or filesystem maps no file with 2 MiB pages");
                return;
            }
            assert!(report.sampled >= 2 && report.small == 0 && !report.dropped, "{report:?}");
        });
    }

    /// A file in memory (tmpfs) cannot be dropped from the page cache: open says so rather than
    /// claiming to have dropped it, every time.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_in_memory_is_not_reported_dropped() {
        let shm = std::path::Path::new("/dev/shm");
        let on_tmpfs = std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
            mounts.lines().any(|l| l.split(' ').nth(1) == Some("/dev/shm") && l.contains(" tmpfs "))
        });
        if !on_tmpfs {
            println!("NOT TESTED: no tmpfs at /dev/shm");
            return;
        }
        with_file_in(&shm.join(format!("tvl-pages-test-{}", std::process::id())), 16 << 20, 4096, |map, file| {
            let report = prefer_huge_pages(map, file);
            println!("{report:?}");
            assert!(report.sampled >= 7 && !report.dropped, "{report:?}");
        });
        let _ = std::fs::remove_dir(shm.join(format!("tvl-pages-test-{}", std::process::id())));
    }
}
