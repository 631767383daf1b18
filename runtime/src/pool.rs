//! A persistent worker pool, created once at load: [`Pool::run`] runs one job on every thread
//! (the caller is thread 0) and returns when all are done. No thread is created per token or
//! per matmul; between jobs workers spin briefly (jobs of one token come microseconds apart),
//! then yield the core for a while (the caller's serial steps between forward passes take up
//! to ~100 µs), then sleep on a condition variable.
//!
//! The pool degrades gracefully when it does not own the cores. A job gives each thread its
//! own part (decoding's matrix products let a thread that finished take over the rest of
//! another's, `tvl_core::parallel::Shares`, but not a claim already started), so a worker that
//! another process has preempted holds everyone up for a scheduler slice (milliseconds,
//! against microseconds of work): with one of two cores busy, two threads decoded 7× slower
//! than one. So the caller measures how long it waits for the
//! workers after its own part; when, over a window of jobs, that wait exceeds what the workers
//! saved, and did in one of the few windows before (one stall of a few milliseconds, which a
//! virtual machine's host causes now and then, is not a lagging worker), it runs every part
//! itself for a while (the workers sleep) and tries them again later, waiting longer each time
//! they still lag. A job that had to wake a sleeping worker is not judged (its wait is the
//! wake-up, not a preempted worker). Small jobs, where handing off costs more
//! than it saves, run on the caller from the start ([`Pool::run_sized`]). (Running jobs on the
//! caller whenever the workers had fallen asleep was tried and dropped: a worker falls asleep
//! while the caller runs a long solo step, and the rule then kept it asleep — two threads
//! decoded the 110M int8 shape 12% slower.) Whoever runs a part computes it exactly the same
//! way, so results do not depend on which thread computed them.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The job of the current generation: a borrowed closure, valid until every worker is done.
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Written by the caller before `generation` is bumped, read by workers after they see it.
    job: UnsafeCell<Option<Job>>,
    generation: AtomicU64,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    worker_panicked: AtomicBool,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

// SAFETY: `job` is only written by the thread that owns the pool (`run` takes `&mut self`)
// while no worker reads it (all workers finished the previous generation), and only read by
// workers between a generation bump and their decrement of `pending`, which `run` waits for.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw job pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// Threads that run jobs together (see the module documentation).
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Jobs still to run on the caller alone before the workers are tried again.
    solo_jobs: u32,
    /// How many solo jobs the next fallback lasts (doubles while the workers keep lagging).
    solo_length: u32,
    /// The current window of parallel jobs.
    window: Window,
    /// Whether each of the last windows lagged (bit i: i + 1 windows ago).
    recent: u32,
}

/// Parallel jobs judged together (see [`Pool::judge`]).
#[derive(Default)]
struct Window {
    /// How many.
    jobs: u32,
    /// The caller's own time.
    own: std::time::Duration,
    /// The time it then waited for the workers.
    lag: std::time::Duration,
}

/// Jobs reading fewer bytes than this run on the caller: one thread streams them in a few
/// microseconds, about what handing off and waiting costs.
pub const SMALL_JOB: usize = 64 << 10;

/// Parallel jobs over which the workers' lag is judged.
const WINDOW: u32 = 32;
/// The windows before the current one that are remembered: the pool falls back when a window
/// lags and one of these did too. One lagging window is not enough: a virtual machine's vCPU is
/// taken away now and then for a few milliseconds (a neighbour on the host), and the fallback
/// that one such stall of a worker triggered cost far more than the stall (512 jobs on one
/// thread: about 8 tokens of the 110M shape at half the speed), several times a second. A
/// worker that shares its core with a busy process lags window after window.
const RECENT_WINDOWS: u32 = 3;
/// First and longest fallbacks, in jobs (a 110M token is about 100 jobs).
const SOLO_FIRST: u32 = 512;
const SOLO_LONGEST: u32 = 1 << 16;

/// Busy-wait rounds before yielding the core. Short: when there are more threads than free
/// cores (a shared machine, parallel tests), a spinning thread steals the core from the one
/// being waited for.
const SPINS: u32 = 256;
/// How long an idle worker keeps yielding (which costs another thread nothing) before it
/// sleeps. Longer than the caller's serial steps between jobs: a batch of 8 sequences copies
/// and samples 8 rows of logits between forward passes (~100 µs), and with 64 yields (~50 µs)
/// the worker fell asleep once per step; waking it costs a futex call and, in a virtual
/// machine, an idle vCPU's wake-up (tens of µs to milliseconds).
const YIELD_FOR: std::time::Duration = std::time::Duration::from_millis(2);

impl Pool {
    /// A pool of `threads` threads in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            worker_panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::new(),
            solo_jobs: 0,
            solo_length: SOLO_FIRST,
            window: Default::default(),
            recent: 0,
        };
        for index in 1..threads.max(1) {
            let for_worker = pool.shared.clone();
            let worker = std::thread::Builder::new()
                .name(format!("tvl-worker-{index}"))
                .spawn(move || worker(&for_worker, index));
            // On failure, dropping `pool` stops and joins the workers started so far.
            pool.workers.push(worker?);
        }
        Ok(pool)
    }

    /// Threads in all, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(thread)` for every thread index in `0..self.threads()` on the caller, one
    /// after another: for jobs too small to be worth a hand-off.
    pub fn run_on_caller(&mut self, job: &(dyn Fn(usize) + Sync)) {
        for thread in 0..self.threads() {
            job(thread);
        }
    }

    /// Runs a job that reads about `bytes` of memory: on the caller alone if it is too small
    /// to be worth a hand-off ([`SMALL_JOB`]), else as [`Pool::run`].
    pub fn run_sized(&mut self, bytes: usize, job: &(dyn Fn(usize) + Sync)) {
        if bytes < SMALL_JOB {
            self.run_on_caller(job)
        } else {
            self.run(job)
        }
    }

    /// Whether the last jobs ran on the caller alone because the workers lagged.
    pub fn is_falling_back(&self) -> bool {
        self.solo_jobs > 0
    }

    /// Runs `job(thread)` for every thread index in `0..self.threads()`, the caller taking 0
    /// (and the others' parts too while the workers lag, see the module documentation).
    pub fn run(&mut self, job: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            return job(0);
        }
        if self.solo_jobs > 0 {
            self.solo_jobs -= 1;
            return self.run_on_caller(job);
        }
        let shared = &*self.shared;
        // SAFETY: no worker reads `job` now: each finished the previous generation (we waited
        // for `pending == 0`). The lifetime is erased, and `Wait` below guarantees that we do
        // not return (or unwind) before every worker is done with the borrow.
        unsafe { *shared.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job)) };
        shared.pending.store(self.workers.len(), SeqCst);
        shared.generation.fetch_add(1, SeqCst);
        // A worker woken now starts late by a wake-up (in a virtual machine, up to
        // milliseconds), which says nothing of whether the workers keep up: such a job is not
        // judged.
        let woken = shared.sleepers.load(SeqCst) > 0;
        if woken {
            let _lock = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let wait = Wait(shared);
        let start = std::time::Instant::now();
        job(0);
        let own = start.elapsed();
        drop(wait);
        let lag = start.elapsed() - own;
        if shared.worker_panicked.swap(false, SeqCst) {
            panic!("a tvl worker thread panicked");
        }
        if !woken {
            self.judge(own, lag);
        }
    }

    /// After every [`WINDOW`] parallel jobs: the caller alone would have taken about
    /// `threads × own`, the pool took `own + lag`. If the pool was slower (the lag exceeded
    /// the gain: a worker missing for scheduler slices, not a late wake-up) in this window and
    /// in one of the [`RECENT_WINDOWS`] before, run on the caller alone for a while, longer
    /// each time in a row.
    fn judge(&mut self, own: std::time::Duration, lag: std::time::Duration) {
        let Window { jobs, own: total_own, lag: total_lag } = &mut self.window;
        *jobs += 1;
        *total_own += own;
        *total_lag += lag;
        if *jobs < WINDOW {
            return;
        }
        let lagged = *total_lag > *total_own * self.workers.len() as u32;
        let again = self.recent & ((1 << RECENT_WINDOWS) - 1) != 0;
        self.recent = (self.recent << 1) | lagged as u32;
        if lagged && again {
            self.solo_jobs = self.solo_length;
            self.solo_length = (self.solo_length * 2).min(SOLO_LONGEST);
            self.recent = 0;
        } else if !lagged {
            self.solo_length = SOLO_FIRST; // the workers keep up (again)
        }
        self.window = Default::default();
    }
}

/// Waits for all workers on drop, so the borrowed job outlives their use even if the caller's
/// share of the job panics.
struct Wait<'a>(&'a Shared);

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.0.pending.load(Acquire) != 0 {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Spin, then sleep, until a new generation (or stop).
        let mut spins = 0;
        let mut yielding_since = None;
        while shared.generation.load(Acquire) == seen && !shared.stop.load(Acquire) {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else if yielding_since.get_or_insert_with(std::time::Instant::now).elapsed() < YIELD_FOR {
                std::thread::yield_now();
            } else {
                let mut lock = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
                shared.sleepers.fetch_add(1, SeqCst);
                while shared.generation.load(SeqCst) == seen && !shared.stop.load(SeqCst) {
                    lock = shared.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
                }
                shared.sleepers.fetch_sub(1, SeqCst);
            }
        }
        if shared.stop.load(Acquire) {
            return;
        }
        seen = shared.generation.load(Acquire);
        // SAFETY: the owner wrote the job before bumping the generation we observed (Acquire
        // pairs with its SeqCst bump) and keeps it alive until `pending` reaches zero.
        let job = unsafe { (*shared.job.get()).expect("a job is set for every generation") };
        // SAFETY: see above: the pointee is alive until we decrement `pending`.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job)(index) }));
        if result.is_err() {
            shared.worker_panicked.store(true, SeqCst);
        }
        shared.pending.fetch_sub(1, Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _lock = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

pub use tvl_core::parallel::{split, Disjoint};

impl tvl_core::Parallel for Pool {
    fn threads(&self) -> usize {
        Pool::threads(self)
    }
    fn run_sized(&mut self, bytes: usize, job: &(dyn Fn(usize) + Sync)) {
        Pool::run_sized(self, bytes, job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_each_job_once() {
        for threads in [1, 2, 3, 5] {
            let mut pool = Pool::new(threads).unwrap();
            for round in 0..200 {
                let mut out = vec![0usize; 103];
                let target = Disjoint::new(&mut out);
                pool.run(&|t| {
                    // SAFETY: `split` gives each thread its own range.
                    let part = unsafe { target.range(split(103, t, threads)) };
                    part.iter_mut().for_each(|v| *v += t + round);
                });
                for t in 0..threads {
                    assert!(out[split(103, t, threads)].iter().all(|&v| v == t + round));
                }
            }
        }
    }

    /// The tests that judge the workers' timing run one at a time (tests run in parallel, and
    /// another test's threads on the same cores make a worker lag for real).
    static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Workers that lag (simulated by a sleep in their part) make the caller take over every
    /// part; each part still runs exactly once per job, whoever runs it.
    #[test]
    fn lagging_workers_fall_back_to_the_caller() {
        let _alone = TIMED.lock().unwrap_or_else(|e| e.into_inner());
        let mut pool = Pool::new(2).unwrap();
        let main = std::thread::current().id();
        let mut fell_back = false;
        // Two lagging windows make it fall back; jobs that woke a sleeping worker are not
        // judged, and under qemu the worker can fall asleep between jobs, so there may be more
        // jobs than two windows before it does (a CI run saw none within 2 × WINDOW + 2).
        for _ in 0..20 * WINDOW {
            if fell_back {
                break;
            }
            let mut out = vec![0usize; 2];
            let target = Disjoint::new(&mut out);
            pool.run(&|t| {
                if std::thread::current().id() != main {
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
                // SAFETY: each thread index writes its own element.
                unsafe { target.range(t..t + 1)[0] += 1 };
            });
            assert_eq!(out, [1, 1]);
            fell_back |= pool.is_falling_back();
        }
        assert!(fell_back, "the caller never took over from a lagging worker");
        let ran_on = std::sync::Mutex::new(Vec::new());
        pool.run(&|t| ran_on.lock().unwrap().push((t, std::thread::current().id())));
        assert!(ran_on.into_inner().unwrap().iter().all(|&(_, id)| id == main), "solo jobs run on the caller");
    }

    /// A worker woken from sleep starts late by the wake-up (in a virtual machine, up to
    /// milliseconds): such jobs are not held against the workers, however late (simulated by
    /// a sleep in the woken worker's part).
    #[test]
    fn woken_workers_are_not_judged_lagging() {
        let _alone = TIMED.lock().unwrap_or_else(|e| e.into_inner());
        let mut pool = Pool::new(2).unwrap();
        let main = std::thread::current().id();
        for _ in 0..WINDOW + 2 {
            // Long enough for the worker to give up yielding and sleep.
            std::thread::sleep(YIELD_FOR * 10);
            pool.run(&|_| {
                if std::thread::current().id() != main {
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
            });
            assert!(!pool.is_falling_back(), "a woken worker was judged lagging");
        }
    }

    /// One long stall of a worker (a vCPU taken away by the host for a few milliseconds) is
    /// not a worker that lags: no fallback; two lagging windows close together are. The rule
    /// itself, on given times (with real threads, an emulated CPU made windows lag at random).
    #[test]
    fn one_stall_is_not_a_lagging_worker() {
        let mut pool = Pool::new(2).unwrap();
        let us = std::time::Duration::from_micros;
        // A window's own time is 32 × 200 µs: a stall of 20 ms makes it lag.
        for job in 0..(RECENT_WINDOWS + 2) * WINDOW {
            pool.judge(us(200), if job == 5 { us(20_000) } else { us(10) });
            assert!(!pool.is_falling_back(), "one stall made the pool fall back");
        }
        for job in 0..2 * WINDOW {
            pool.judge(us(200), if job % WINDOW == 5 { us(20_000) } else { us(10) });
        }
        assert!(pool.is_falling_back(), "two lagging windows in a row did not make the pool fall back");
    }

    #[test]
    fn split_covers_everything_in_order() {
        let parts: Vec<_> = (0..3).map(|i| split(10, i, 3)).collect();
        assert_eq!(parts, [0..3, 3..6, 6..10]);
    }
}
