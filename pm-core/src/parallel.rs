//! Looking at many services at once.
//!
//! pm-status with a thousand services spends its time in open/read of small kernel files,
//! one service after another; the answers do not depend on each other, so the work is
//! shared among a few threads (one more than there are CPUs, at most [`MAX_THREADS`]) and the results come
//! back in the order of the input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// More threads than this buy nothing: the kernel's locks on /proc and cgroupfs become
/// the limit.
pub const MAX_THREADS: usize = 4;

/// Below this many items one thread is faster than starting more.
const MIN_ITEMS: usize = 64;

/// Threads worth starting: one more than there are CPUs, at most [`MAX_THREADS`]. A
/// thread that sleeps on a kernel lock (kernfs, cgroup) leaves its CPU idle, and the one
/// more takes it: pm-status --json at 1000 services kept 1.45 of 2 CPUs busy with two
/// threads, 1.73 with three (25.0 -> 21.7 ms).
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() + 1)
        .min(MAX_THREADS)
}

/// `items.into_iter().map(f).collect()`, on up to [`MAX_THREADS`] threads.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = threads();
    if threads < 2 || items.len() < MIN_ITEMS {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let inputs: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let outputs: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = inputs.get(i) else { break };
        let item = slot.lock().map(|mut s| s.take()).ok().flatten();
        if let Some(item) = item {
            let r = f(item);
            if let Ok(mut out) = outputs[i].lock() {
                *out = Some(r);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // A thread that cannot be started leaves its share to the others.
            let _ = std::thread::Builder::new().spawn_scoped(scope, work);
        }
        work();
    });
    outputs
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}

/// `items.into_iter().map(f).collect()`, each item on a thread of its own: for work that
/// mostly waits (stops, each up to its timeout), where a shared pool would queue one
/// service's wait behind another's. A thread that cannot be started runs its item here;
/// an item whose thread panicked has no result (`None`).
pub fn each<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<Option<R>> {
    if items.len() < 2 {
        return items.into_iter().map(|t| Some(f(t))).collect();
    }
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let take = |slot: &Mutex<Option<T>>| slot.lock().ok().and_then(|mut s| s.take());
    let (f, take) = (&f, &take);
    std::thread::scope(|scope| {
        let handles: Vec<_> = slots
            .iter()
            .map(|slot| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || take(slot).map(f))
                    .ok()
            })
            .collect();
        handles
            .into_iter()
            .zip(&slots)
            .map(|(h, slot)| match h {
                Some(h) => h.join().ok().flatten(),
                None => take(slot).map(f),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_order_and_every_item() {
        let items: Vec<u32> = (0..1000).collect();
        let out = super::map(items, |i| {
            // Uneven work, so threads finish out of order.
            if i % 7 == 0 {
                std::thread::yield_now();
            }
            i * 2
        });
        assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn each_runs_every_item_at_once_in_order() {
        // Ten waits of 100 ms end in about 100 ms only if they overlap.
        let t = std::time::Instant::now();
        let out = super::each((0..10).collect(), |i: u32| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            i + 1
        });
        assert_eq!(out, (1..11).map(Some).collect::<Vec<_>>());
        assert!(
            t.elapsed() < std::time::Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }
}
