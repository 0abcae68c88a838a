//! The kernels' fork-join pool: one helper thread per extra core, which spins for a while after
//! each job instead of going to sleep. A decoding step of a 30-layer model makes about 120 small
//! parallel calls a few microseconds apart; a pool whose threads sleep between calls (rayon's)
//! pays a futex wake-up for each of them, which on a virtual machine cost a third of the step.
//! After [`SPIN`] without work a helper parks, so an idle engine uses no CPU.
//!
//! Tasks are numbered `0..tasks`; the calling thread takes part, and the call returns when every
//! task has run. The job lives on the caller's stack: the caller withdraws it and waits until no
//! helper is still looking at it before returning.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a helper keeps spinning after its last job before it parks.
const SPIN: Duration = Duration::from_micros(300);

struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// A task panicked; the caller panics once every task is accounted for.
    panicked: AtomicBool,
}

struct Helper {
    thread: Thread,
    parked: AtomicBool,
}

struct Pool {
    /// The current job (type-erased `Job`), or null.
    job: AtomicPtr<()>,
    /// Bumped for every job, so a helper knows there is something new.
    epoch: AtomicU64,
    /// Helpers between announcing interest in the job and letting go of it.
    busy: AtomicUsize,
    helpers: OnceLock<Vec<Helper>>,
}

static POOL: Pool = Pool {
    job: AtomicPtr::new(std::ptr::null_mut()),
    epoch: AtomicU64::new(0),
    busy: AtomicUsize::new(0),
    helpers: OnceLock::new(),
};

/// Helper threads: `BEAMLINE_KERNEL_THREADS` (total, with the caller) or one per core.
fn helpers() -> &'static [Helper] {
    POOL.helpers.get_or_init(|| {
        let threads = std::env::var("BEAMLINE_KERNEL_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        (1..threads)
            .map(|index| {
                let handle = std::thread::Builder::new()
                    .name(format!("beamline-kernel-{index}"))
                    .spawn(move || helper_loop(index - 1))
                    .expect("starting a kernel thread");
                Helper {
                    thread: handle.thread().clone(),
                    parked: AtomicBool::new(false),
                }
            })
            .collect()
    })
}

/// Threads a job's tasks run on: the helpers and the caller.
pub fn threads() -> usize {
    helpers().len() + 1
}

/// One caller at a time owns the helpers; another caller meanwhile (two engines in one process)
/// runs its tasks on its own thread.
static CALLER: Mutex<()> = Mutex::new(());

/// Tasks per thread for kernels that walk weight rows in sub-panels: a few, so that a thread
/// held up elsewhere is made up for by the others, but long runs of sub-panels within a task,
/// since each prefetches the next into its own core's cache (a task's first sub-panel was
/// prefetched by whichever thread ran the rows before it). Measured with `kernel_bench` on
/// `dpbf16`: 3 as fast as 1 or 2, 6 and 8 slower.
const TASKS_PER_THREAD: usize = 3;

/// Rows per task when `rows` are split into whole sub-panels of `sub_panel` rows, a few tasks
/// per thread.
pub fn rows_per_task(rows: usize, sub_panel: usize) -> usize {
    rows.div_ceil(sub_panel)
        .div_ceil(threads() * TASKS_PER_THREAD)
        .max(1)
        * sub_panel
}

/// Runs `run(0..tasks)` across the pool and returns when all have finished.
pub fn run(tasks: usize, run: &(dyn Fn(usize) + Sync)) {
    let helpers = helpers();
    let owner = match CALLER.try_lock() {
        Ok(guard) => Some(guard),
        // An earlier call panicked while it held the pool; the pool itself is intact.
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    if tasks <= 1 || helpers.is_empty() || owner.is_none() {
        (0..tasks).for_each(run);
        return;
    }
    let job = Job {
        run,
        tasks,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    };
    POOL.job.store(&job as *const Job as *mut (), SeqCst);
    POOL.epoch.fetch_add(1, SeqCst);
    for h in helpers {
        if h.parked.swap(false, SeqCst) {
            h.thread.unpark();
        }
    }
    work_on(&job);
    while job.done.load(Acquire) < tasks {
        std::hint::spin_loop();
    }
    // Withdraw the job, then wait until no helper can still be reading it.
    POOL.job.store(std::ptr::null_mut(), SeqCst);
    while POOL.busy.load(SeqCst) != 0 {
        std::hint::spin_loop();
    }
    assert!(!job.panicked.load(SeqCst), "a kernel task panicked");
}

fn work_on(job: &Job) {
    loop {
        let task = job.next.fetch_add(1, Relaxed);
        if task >= job.tasks {
            return;
        }
        // A panicking task still counts as done, so the caller is never left waiting for it
        // (and a helper thread survives it).
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(task)));
        if ran.is_err() {
            job.panicked.store(true, SeqCst);
        }
        job.done.fetch_add(1, Release);
    }
}

fn helper_loop(index: usize) {
    let me = || &helpers()[index];
    let mut seen = POOL.epoch.load(SeqCst);
    loop {
        // Wait for a new job: spin, then park.
        let idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = POOL.epoch.load(SeqCst);
            if epoch != seen {
                seen = epoch;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || idle_since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            me().parked.store(true, SeqCst);
            if POOL.epoch.load(SeqCst) == seen {
                // A missed unpark costs at most this timeout.
                std::thread::park_timeout(Duration::from_millis(5));
            }
            me().parked.store(false, SeqCst);
        }
        POOL.busy.fetch_add(1, SeqCst);
        let job = POOL.job.load(SeqCst) as *const Job;
        if !job.is_null() {
            // SAFETY: the caller keeps the job alive until `busy` is zero after withdrawing it,
            // and this thread counted itself in `busy` before loading the pointer.
            work_on(unsafe { &*job });
        }
        POOL.busy.fetch_sub(1, SeqCst);
    }
}

/// `y = x W^T` split by chunks of `per_task` rows of `W`: `tile(start, end)` returns the products
/// `[m, end - start]` for those rows, and they land in their columns of `out` (`[m, rows]`).
pub fn by_row_chunks(
    rows: usize,
    per_task: usize,
    m: usize,
    out: &mut [f32],
    tile: impl Fn(usize, usize) -> Vec<f32> + Sync,
) {
    assert_eq!(out.len(), m * rows);
    let base = SharedOut(out.as_mut_ptr());
    run(rows.div_ceil(per_task), &|task| {
        let start = task * per_task;
        let end = (start + per_task).min(rows);
        let width = end - start;
        let products = tile(start, end);
        debug_assert_eq!(products.len(), m * width);
        for i in 0..m {
            // SAFETY: `out` holds `m * rows` floats (asserted) and outlives `run`; this task
            // alone writes columns `start..end`, so the writes of different tasks are disjoint.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    products.as_ptr().add(i * width),
                    base.get().add(i * rows + start),
                    width,
                );
            }
        }
    });
}

/// A buffer's base pointer, shared by the tasks of one job that touch disjoint parts of it
/// (each user states which parts).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);

impl SharedOut {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: every user's tasks touch disjoint elements only.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_task_fails_the_call_without_hanging_the_pool() {
        let outcome = std::panic::catch_unwind(|| {
            run(8, &|t| {
                assert!(t != 5, "task five fails");
            })
        });
        assert!(outcome.is_err());
        // The pool still works afterwards.
        let count = AtomicUsize::new(0);
        run(8, &|_| {
            count.fetch_add(1, Relaxed);
        });
        assert_eq!(count.load(Relaxed), 8);
    }

    #[test]
    fn every_task_runs_once_across_many_jobs() {
        for tasks in [0, 1, 2, 7, 100] {
            for _ in 0..200 {
                let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                run(tasks, &|t| {
                    counts[t].fetch_add(1, Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Relaxed) == 1));
            }
        }
    }
}
