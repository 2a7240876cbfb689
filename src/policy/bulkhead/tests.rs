use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Lets spawned tasks run until `done` holds (bounded, on the paused clock
/// nothing here waits on real time).
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("tasks did not settle");
}

fn spawn_acquire(bulkhead: &Arc<Bulkhead>) -> JoinHandle<Result<BulkheadPermit, Shed>> {
    tokio::spawn(bulkhead.acquire())
}

#[test]
fn try_acquire_sheds_when_full_and_a_dropped_permit_frees_its_slot() {
    let bulkhead = Bulkhead::new(2, 10, ms(100));
    let first = bulkhead.try_acquire().unwrap();
    let second = bulkhead.try_acquire().unwrap();
    assert_eq!(bulkhead.in_flight(), 2);
    assert_eq!(bulkhead.try_acquire().unwrap_err(), Shed::Full);
    // try_acquire never queues.
    assert_eq!(bulkhead.queued(), 0);
    drop(first);
    assert_eq!(bulkhead.in_flight(), 1);
    let third = bulkhead.try_acquire().unwrap();
    drop(second);
    drop(third);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[test]
fn accessors_report_the_settings() {
    let bulkhead = Bulkhead::new(4, 8, ms(100));
    assert_eq!(bulkhead.max_concurrent(), 4);
    assert_eq!(bulkhead.max_queue(), 8);
    assert_eq!(bulkhead.queue_timeout(), ms(100));
    assert_eq!(Shed::Full.as_str(), "full");
    assert_eq!(Shed::QueueTimeout.as_str(), "queue_timeout");
}

#[test]
fn bulkhead_and_permit_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Bulkhead>();
    assert_send_sync::<BulkheadPermit>();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn acquire_takes_a_free_permit_without_queueing() {
    let bulkhead = Arc::new(Bulkhead::new(1, 0, ms(100)));
    let permit = bulkhead.acquire().await.unwrap();
    assert_eq!(bulkhead.in_flight(), 1);
    // No queue: shed at once.
    let start = Instant::now();
    assert_eq!(bulkhead.acquire().await.unwrap_err(), Shed::Full);
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop(permit);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiters_are_served_first_in_first_out() {
    let bulkhead = Arc::new(Bulkhead::new(1, 3, ms(1_000)));
    let held = bulkhead.try_acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for name in ["a", "b", "c"] {
        let shared = Arc::clone(&bulkhead);
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let permit = shared.acquire().await.unwrap();
            order.lock().unwrap().push(name);
            tokio::time::sleep(ms(10)).await;
            drop(permit);
        }));
        let expected = tasks.len();
        settle(|| bulkhead.queued() == expected).await;
    }
    // A released permit goes to the oldest waiter, not to a newcomer.
    drop(held);
    assert_eq!(bulkhead.try_acquire().unwrap_err(), Shed::Full);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["a", "b", "c"]);
    assert_eq!(bulkhead.queued(), 0);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_full_queue_sheds_at_once() {
    let bulkhead = Arc::new(Bulkhead::new(1, 2, ms(100)));
    let held = bulkhead.try_acquire().unwrap();
    let waiters = [spawn_acquire(&bulkhead), spawn_acquire(&bulkhead)];
    settle(|| bulkhead.queued() == 2).await;
    assert_eq!(bulkhead.acquire().await.unwrap_err(), Shed::Full);
    assert_eq!(bulkhead.queued(), 2);
    drop(held);
    for waiter in waiters {
        drop(waiter.await.unwrap().unwrap());
    }
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiter_gives_up_after_queue_timeout() {
    let bulkhead = Arc::new(Bulkhead::new(1, 1, ms(100)));
    let held = bulkhead.try_acquire().unwrap();
    let start = Instant::now();
    assert_eq!(bulkhead.acquire().await.unwrap_err(), Shed::QueueTimeout);
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(bulkhead.queued(), 0);
    drop(held);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiter_served_before_its_timeout_gets_the_permit() {
    let bulkhead = Arc::new(Bulkhead::new(1, 1, ms(100)));
    let held = bulkhead.try_acquire().unwrap();
    let waiter = spawn_acquire(&bulkhead);
    tokio::time::sleep(ms(99)).await;
    drop(held);
    let permit = waiter.await.unwrap().unwrap();
    assert_eq!(bulkhead.in_flight(), 1);
    drop(permit);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let bulkhead = Arc::new(Bulkhead::new(1, 1, ms(1_000)));
    let held = bulkhead.try_acquire().unwrap();
    let waiter = spawn_acquire(&bulkhead);
    settle(|| bulkhead.queued() == 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(bulkhead.queued(), 0);
    // Its place is free again, and the permit is not owed to it.
    let next = spawn_acquire(&bulkhead);
    settle(|| bulkhead.queued() == 1).await;
    drop(held);
    drop(next.await.unwrap().unwrap());
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_permit_handed_to_a_waiter_that_is_gone_comes_back() {
    let bulkhead = Arc::new(Bulkhead::new(1, 1, ms(1_000)));
    let held = bulkhead.try_acquire().unwrap();
    let waiter = spawn_acquire(&bulkhead);
    settle(|| bulkhead.queued() == 1).await;
    // The permit is assigned to the waiter, which is cancelled before it
    // runs again.
    drop(held);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(bulkhead.queued(), 0);
    assert_eq!(bulkhead.in_flight(), 0);
    assert!(bulkhead.try_acquire().is_ok());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_acquire_future_leaves_the_queue() {
    let bulkhead = Arc::new(Bulkhead::new(1, 1, ms(1_000)));
    let held = bulkhead.try_acquire().unwrap();
    let shed = tokio::time::timeout(ms(10), bulkhead.acquire()).await;
    assert!(shed.is_err());
    assert_eq!(bulkhead.queued(), 0);
    drop(held);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn zero_permits_admit_nothing() {
    let bulkhead = Arc::new(Bulkhead::new(0, 1, ms(50)));
    assert_eq!(bulkhead.try_acquire().unwrap_err(), Shed::Full);
    assert_eq!(bulkhead.acquire().await.unwrap_err(), Shed::QueueTimeout);
    assert_eq!(bulkhead.in_flight(), 0);
}

proptest! {
    /// Permits in flight never exceed `max_concurrent`, the count is exact,
    /// and it returns to zero whatever order the permits are dropped in.
    #[test]
    fn in_flight_never_exceeds_the_limit(
        max_concurrent in 0usize..6,
        ops in proptest::collection::vec((any::<bool>(), any::<usize>()), 1..200),
    ) {
        let bulkhead = Bulkhead::new(max_concurrent, 4, ms(10));
        let mut permits = Vec::new();
        for (take, index) in ops {
            if take {
                match bulkhead.try_acquire() {
                    Ok(permit) => permits.push(permit),
                    Err(shed) => {
                        prop_assert_eq!(shed, Shed::Full);
                        prop_assert_eq!(permits.len(), max_concurrent);
                    }
                }
            } else if !permits.is_empty() {
                drop(permits.swap_remove(index % permits.len()));
            }
            prop_assert!(permits.len() <= max_concurrent);
            prop_assert_eq!(bulkhead.in_flight(), permits.len());
        }
        drop(permits);
        prop_assert_eq!(bulkhead.in_flight(), 0);
    }

    /// The same with queueing callers that start, hold and give up at
    /// random times (some cancelled by an outer timeout), on a paused clock.
    #[test]
    fn queued_callers_never_exceed_the_limits(
        max_concurrent in 1usize..4,
        max_queue in 0usize..4,
        callers in proptest::collection::vec((0u64..50, 0u64..50, 1u64..80), 1..30),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let bulkhead = Arc::new(Bulkhead::new(max_concurrent, max_queue, ms(20)));
            let holding = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for (start, hold, patience) in callers {
                let bulkhead = Arc::clone(&bulkhead);
                let holding = Arc::clone(&holding);
                let most = Arc::clone(&most);
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(ms(start)).await;
                    let acquired = tokio::time::timeout(ms(patience), bulkhead.acquire()).await;
                    assert!(bulkhead.queued() <= bulkhead.max_queue());
                    if let Ok(Ok(permit)) = acquired {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        assert!(bulkhead.in_flight() <= bulkhead.max_concurrent());
                        tokio::time::sleep(ms(hold)).await;
                        holding.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert!(most.load(Ordering::SeqCst) <= max_concurrent);
            assert_eq!(bulkhead.in_flight(), 0);
            assert_eq!(bulkhead.queued(), 0);
        });
    }
}
