//! How the forward pass runs its matrix products and attention on several threads without
//! knowing what threads are: a [`Parallel`] runs one job on each of its threads. The std
//! runtime's pool implements it; [`Serial`] (bare metal, one core) runs every part in turn.

use core::ops::Range;

/// Runs jobs on a fixed set of threads; a job is called once per thread index.
pub trait Parallel {
    /// Threads a job is split over.
    fn threads(&self) -> usize;
    /// Calls `job(i)` for every thread `i` (concurrently or not) and returns when all are done.
    /// `bytes` is about how much memory the job reads: small jobs may run on the caller alone.
    fn run_sized(&mut self, bytes: usize, job: &(dyn Fn(usize) + Sync));
}

/// One thread: every job runs on the caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn threads(&self) -> usize {
        1
    }
    fn run_sized(&mut self, _bytes: usize, job: &(dyn Fn(usize) + Sync)) {
        job(0)
    }
}

/// The part `index` of `0..len` split into `parts` contiguous, nearly equal ranges.
pub fn split(len: usize, index: usize, parts: usize) -> Range<usize> {
    len * index / parts..len * (index + 1) / parts
}

/// About how many bytes of weights a thread takes at least at a time from a [`Shares`] of row
/// tiles: a locked compare-and-swap per claim is noise against streaming it, and at a share's
/// tail, where claims are this small, a thread that finishes first waits at most about one
/// such claim's time for the others.
pub const SHARE_CHUNK_BYTES: usize = 32 << 10;

/// Threads whose shares of a job [`Shares`] lets the others take over; a job on more threads
/// is split statically.
pub const MAX_SHARING_THREADS: usize = 16;

/// One contiguous share of `len` items per thread, as [`split`] gives, taken claim by claim:
/// by its own thread first, then by any thread that has finished its own share. A static
/// split leaves every thread waiting for the slowest at the end of each job, and with two
/// cores streaming from one memory the slowest changes from job to job (a neighbour's traffic,
/// a preempted thread). Each thread still streams its own share front to back; only the tail
/// of a slower one moves. Which thread computes an item never changes its value, so results
/// do not depend on who took what.
///
/// A claim is a locked compare-and-swap, which waits for the loads in flight before it: at
/// one per 32 KiB it took 2.5–3% of each thread's decoding time. So a claim takes
/// `left / (2 · parts)` of what is left of its share (a quarter with two threads; OpenMP's
/// guided schedule takes `left / parts` of a whole loop), at least `chunk` items: a few large
/// claims first and `chunk`-sized ones at the tail, where a thread that finished early takes
/// over.
pub struct Shares {
    len: usize,
    parts: usize,
    chunk: usize,
    /// Items claimed of each share, one counter per cache line (a counter is written by its
    /// owner once per claim; sharing a line with another's would bounce it between cores).
    taken: [TakenCount; MAX_SHARING_THREADS],
}

#[repr(align(64))]
struct TakenCount(core::sync::atomic::AtomicUsize);

impl Shares {
    /// `len` items split into `parts` shares, handed out at least `chunk` items at a time.
    pub fn new(len: usize, parts: usize, chunk: usize) -> Shares {
        let taken = core::array::from_fn(|_| TakenCount(core::sync::atomic::AtomicUsize::new(0)));
        Shares { len, parts: parts.max(1), chunk: chunk.max(1), taken }
    }

    /// Calls `work(items)` on claims of items until none is left: this thread's share from the
    /// front, then the rest of the other shares, each from where it has got to.
    pub fn run(&self, thread: usize, mut work: impl FnMut(Range<usize>)) {
        use core::sync::atomic::Ordering::Relaxed;
        if self.parts > MAX_SHARING_THREADS {
            let mine = split(self.len, thread, self.parts);
            if !mine.is_empty() {
                work(mine);
            }
            return;
        }
        for share in (thread..self.parts).chain(0..thread) {
            let items = split(self.len, share, self.parts);
            let taken = &self.taken[share].0;
            // Relaxed: the counter only decides who computes which items; the job's end (the
            // pool waits for every thread) orders their results.
            let mut claimed = taken.load(Relaxed);
            while claimed < items.len() {
                let left = items.len() - claimed;
                let size = (left / (2 * self.parts)).max(self.chunk).min(left);
                match taken.compare_exchange_weak(claimed, claimed + size, Relaxed, Relaxed) {
                    Ok(_) => {
                        work(items.start + claimed..items.start + claimed + size);
                        claimed = taken.load(Relaxed);
                    }
                    Err(now) => claimed = now,
                }
            }
        }
    }
}

/// A `&mut [T]` that threads write at disjoint ranges.
#[derive(Clone, Copy)]
pub struct Disjoint<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: access goes through `range`, whose contract makes ranges of concurrent users disjoint.
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    /// Lends `slice` to the threads of one job.
    pub fn new(slice: &mut [T]) -> Disjoint<T> {
        Disjoint { ptr: slice.as_mut_ptr(), len: slice.len() }
    }

    /// Elements of the slice.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// # Safety
    /// Ranges used by concurrent callers must not overlap, and the slice `new` was given must
    /// outlive every use (it is borrowed mutably by the caller for the whole job).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len, "Disjoint::range out of bounds");
        // SAFETY: in bounds (checked), disjoint from other users' ranges (caller's contract).
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// Writes element `index`.
    ///
    /// # Safety
    /// As [`Disjoint::range`], for the one element.
    pub unsafe fn set(&self, index: usize, value: T) {
        // SAFETY: the caller's contract is `range`'s.
        unsafe { self.range(index..index + 1)[0] = value }
    }
}

/// A buffer in a `static` that is handed out once, as `&'static mut`: how firmware without a
/// heap keeps its state arena, tokenizer index and token buffers (`StaticArena::new(0.0)`
/// of [`StateLayout::words`](tvl_layout::StateLayout) words). All-zero initial contents put it
/// in `.bss`, costing no flash.
// (The cells first, on a cache line: the layouts start every vector 64 bytes into the arena.)
#[repr(C, align(64))]
pub struct StaticArena<T, const N: usize> {
    cells: core::cell::UnsafeCell<[T; N]>,
    taken: core::sync::atomic::AtomicBool,
}

// SAFETY: the cells are only reachable through `take`, which hands them out at most once.
unsafe impl<T: Send, const N: usize> Sync for StaticArena<T, N> {}

impl<T: Copy, const N: usize> StaticArena<T, N> {
    /// N copies of `value`.
    pub const fn new(value: T) -> Self {
        StaticArena {
            taken: core::sync::atomic::AtomicBool::new(false),
            cells: core::cell::UnsafeCell::new([value; N]),
        }
    }

    /// The buffer, the first time; `None` after.
    #[allow(clippy::mut_from_ref)] // handed out once, see below
    pub fn take(&'static self) -> Option<&'static mut [T; N]> {
        use core::sync::atomic::Ordering::AcqRel;
        if self.taken.swap(true, AcqRel) {
            return None;
        }
        // SAFETY: `taken` was false and is now true, atomically: this is the only reference
        // ever made to the cells, and it lives as long as the static.
        Some(unsafe { &mut *self.cells.get() })
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    /// Every item is handed out exactly once, whether the threads run one after another (the
    /// pool's fallback: the first takes everything and the others find nothing left) or at
    /// once; also with more threads than [`MAX_SHARING_THREADS`] (a static split).
    #[test]
    fn shares_hand_out_every_item_once() {
        for (len, parts, chunk) in
            [(0, 2, 4), (1, 2, 1), (7, 2, 3), (100, 3, 7), (64, 4, 64), (1000, 2, 1), (50, 20, 2)]
        {
            let count: Vec<AtomicU32> = (0..len).map(|_| AtomicU32::new(0)).collect();
            let take = |range: Range<usize>| {
                for i in range {
                    count[i].fetch_add(1, Relaxed);
                }
            };
            // One after another: thread 0 takes every share.
            let shares = Shares::new(len, parts, chunk);
            let mut first = 0;
            shares.run(0, |r| {
                first += r.len();
                take(r)
            });
            for thread in 1..parts {
                shares.run(thread, take);
            }
            if parts <= MAX_SHARING_THREADS {
                assert_eq!(first, len, "thread 0 alone takes everything ({len}, {parts}, {chunk})");
            }
            assert!(count.iter().all(|c| c.swap(0, Relaxed) == 1), "once each, in turn ({len}, {parts}, {chunk})");
            // At once, repeatedly (the interleavings differ).
            for _ in 0..20 {
                let shares = Shares::new(len, parts, chunk);
                std::thread::scope(|s| {
                    for thread in 0..parts {
                        let shares = &shares;
                        s.spawn(move || shares.run(thread, take));
                    }
                });
                assert!(count.iter().all(|c| c.swap(0, Relaxed) == 1), "once each, at once ({len}, {parts}, {chunk})");
            }
        }
    }

    /// A thread takes its own share first, front to back, in chunks.
    #[test]
    fn shares_start_with_the_own_share_in_order() {
        let shares = Shares::new(10, 2, 3);
        let mut ranges = Vec::new();
        shares.run(1, |r| ranges.push(r));
        assert_eq!(ranges, [5..8, 8..10, 0..3, 3..5]);
    }

    /// Claims shrink with what is left of a share (a quarter of it with two threads), down to
    /// the chunk: few locked operations on a long share, small ones at its tail.
    #[test]
    fn claims_are_a_quarter_of_what_is_left_down_to_the_chunk() {
        let shares = Shares::new(2000, 2, 20);
        let mut sizes = Vec::new();
        shares.run(0, |r| sizes.push(r.len()));
        // Share 0 is 1000 items: 250, 187, 140, 105, 79, 59, 45, 33, 25, then chunks of 20.
        assert_eq!(sizes[..10], [250, 187, 140, 105, 79, 59, 45, 33, 25, 20]);
        assert_eq!(sizes.iter().sum::<usize>(), 2000);
        assert!(sizes.len() < 2 * 1000 / 20 / 2, "{} claims", sizes.len());
    }
}
