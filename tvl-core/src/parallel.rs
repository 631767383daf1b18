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

    /// # Safety
    /// Ranges used by concurrent callers must not overlap, and the slice `new` was given must
    /// outlive every use (it is borrowed mutably by the caller for the whole job).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len, "Disjoint::range out of bounds");
        // SAFETY: in bounds (checked), disjoint from other users' ranges (caller's contract).
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
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
