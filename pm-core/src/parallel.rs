//! Looking at many services at once.
//!
//! pm-status with a thousand services spends its time in open/read of small kernel files,
//! one service after another; the answers do not depend on each other, so the work is
//! shared among a few threads (one per CPU, at most [`MAX_THREADS`]) and the results come
//! back in the order of the input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// More threads than this buy nothing: the kernel's locks on /proc and cgroupfs become
/// the limit.
pub const MAX_THREADS: usize = 4;

/// Below this many items one thread is faster than starting more.
const MIN_ITEMS: usize = 64;

/// Threads worth starting: one per CPU, at most [`MAX_THREADS`].
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
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

/// `for r in items.into_iter().map(f) { sink(r) }`, `f` on up to [`MAX_THREADS`] threads
/// started once, `sink` on this thread in the order of the items; at most `window`
/// results wait for `sink` (memory stays flat however many items). pm-status --json
/// streams a thousand services this way without the stall at the end of each batch.
pub fn map_in_order<T: Send, R: Send>(
    items: Vec<T>,
    window: usize,
    f: impl Fn(T) -> R + Sync,
    mut sink: impl FnMut(R),
) {
    use std::sync::Condvar;
    let threads = threads();
    if threads < 2 || items.len() < MIN_ITEMS {
        items.into_iter().map(f).for_each(sink);
        return;
    }
    let n = items.len();
    let window = window.max(1);
    let inputs: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let outputs: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // How many results `sink` has taken; guarded by `gate` for the waits on `moved`.
    let taken = AtomicUsize::new(0);
    let gate = Mutex::new(());
    let moved = Condvar::new();
    // Threads inside `wait`. A notify costs a futex call (and often a context switch)
    // even with nobody waiting, three per service; with this count it is made only when
    // someone may be asleep. Both sides fence (SeqCst) between their own write and their
    // read of the other's: either the waiter sees the change, or the notifier sees it.
    let sleepers = AtomicUsize::new(0);
    let wait = |until: &dyn Fn() -> bool| {
        if until() {
            return;
        }
        let Ok(mut g) = gate.lock() else { return };
        sleepers.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        while !until() {
            g = match moved.wait(g) {
                Ok(g) => g,
                Err(_) => break,
            };
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
    };
    let notify = || {
        std::sync::atomic::fence(Ordering::SeqCst);
        if sleepers.load(Ordering::SeqCst) > 0 {
            drop(gate.lock());
            moved.notify_all();
        }
    };
    // Workers that are gone, also by a panic in `f`: the results they left are all
    // there will be, and waiting for more would hang.
    let gone = AtomicUsize::new(0);
    // A worker panicked: its item never comes, so nobody waits any more (the scope then
    // passes the panic on).
    let broken = std::sync::atomic::AtomicBool::new(false);
    struct Gone<'a>(
        &'a AtomicUsize,
        &'a std::sync::atomic::AtomicBool,
        &'a dyn Fn(),
    );
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.1.store(true, Ordering::Release);
            }
            self.0.fetch_add(1, Ordering::AcqRel);
            (self.2)();
        }
    }
    let broke = || broken.load(Ordering::Acquire);
    // Item `i` mapped, its result left for the sink.
    let compute = |i: usize| {
        let item = inputs[i].lock().map(|mut s| s.take()).ok().flatten();
        let r = item.map(&f);
        if let Ok(mut out) = outputs[i].lock() {
            *out = r;
        }
    };
    let work = || {
        let _gone = Gone(&gone, &broken, &notify);
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            wait(&|| i < taken.load(Ordering::Acquire) + window || broke());
            if broke() {
                break;
            }
            compute(i);
            notify();
        }
    };
    std::thread::scope(|scope| {
        // This thread is one of the workers too, whenever the next result is not there yet:
        // it sleeps only when every item is taken.
        let started = (1..threads)
            .filter(|_| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, work)
                    .is_ok()
            })
            .count();
        // A panic here (in `f` or `sink`) must not leave workers waiting for room.
        let main_gone = AtomicUsize::new(0);
        let _main = Gone(&main_gone, &broken, &notify);
        for (i, out) in outputs.iter().enumerate() {
            let has = || out.lock().is_ok_and(|o| o.is_some());
            while !has() && !broke() {
                // The next item not yet taken, if it is within the window.
                let j = next.load(Ordering::Relaxed);
                if j >= n || j >= i + window {
                    wait(&|| has() || gone.load(Ordering::Acquire) >= started || broke());
                    break;
                }
                if next
                    .compare_exchange(j, j + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                compute(j);
            }
            if let Some(r) = out.lock().ok().and_then(|mut o| o.take()) {
                sink(r);
            }
            taken.store(i + 1, Ordering::Release);
            notify();
        }
    });
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
    fn map_in_order_keeps_the_order_and_every_item_within_its_window() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let done = AtomicUsize::new(0);
        let mut seen = Vec::new();
        super::map_in_order(
            (0..1000u32).collect(),
            8,
            |i| {
                if i % 7 == 0 {
                    std::thread::yield_now();
                }
                done.fetch_add(1, Ordering::SeqCst);
                i * 2
            },
            |r| {
                // Never more than the window (and one per thread in flight) ahead.
                let ahead = done.load(Ordering::SeqCst) - seen.len();
                assert!(ahead <= 8 + super::MAX_THREADS, "{ahead} ahead");
                seen.push(r);
            },
        );
        assert_eq!(seen, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn map_in_order_passes_a_panic_on_and_does_not_hang() {
        let run = std::panic::catch_unwind(|| {
            super::map_in_order(
                (0..1000u32).collect(),
                4,
                |i| {
                    assert!(i != 100, "item 100");
                    i
                },
                |_| {},
            )
        });
        assert!(run.is_err());
    }

    #[test]
    fn map_in_order_passes_a_panic_of_the_sink_on_and_does_not_hang() {
        // The workers wait for room in a window of 2 that the sink never makes.
        let run = std::panic::catch_unwind(|| {
            super::map_in_order((0..1000u32).collect(), 2, |i| i, |i| assert!(i != 3))
        });
        assert!(run.is_err());
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
