//! A value published on every write and waited on now and then: the log's
//! progress, the commit offset, the applied offset.
//!
//! `tokio::sync::watch` would do, but its sender wakes through eight
//! `Notify` locks on every send whether or not anyone waits, and the write
//! path publishes three times per write (a profile of SET put 10% of the
//! server's samples there). A [`Signal`] counts the tasks waiting on it and
//! publishing costs one uncontended lock when none is.
//!
//! The semantics are the watch channel's: [`Watcher::changed`] completes
//! once a value newer than the last one the watcher saw is published (or
//! when the [`Signal`] is dropped: [`Closed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

struct Inner<T> {
    /// The value and its version (bumped by every publication).
    value: Mutex<(T, u64)>,
    /// Tasks inside [`Watcher::changed`].
    waiting: AtomicUsize,
    closed: AtomicBool,
    notify: Notify,
}

/// The publishing side (one per value; dropping it closes the watchers).
pub struct Signal<T>(Arc<Inner<T>>);

/// A subscriber that remembers the last version it saw.
pub struct Watcher<T> {
    inner: Arc<Inner<T>>,
    seen: u64,
}

/// The [`Signal`] was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl<T: Clone> Signal<T> {
    pub fn new(value: T) -> Signal<T> {
        Signal(Arc::new(Inner {
            value: Mutex::new((value, 0)),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
        }))
    }

    /// Replace the value and wake every waiting watcher.
    pub fn publish(&self, value: T) {
        {
            let mut v = self.0.value.lock();
            v.0 = value;
            v.1 += 1;
        }
        self.wake();
    }

    /// Let `f` modify the value; publish (and wake) only when it says it
    /// did.
    pub fn publish_if(&self, f: impl FnOnce(&mut T) -> bool) -> bool {
        let modified = {
            let mut v = self.0.value.lock();
            let modified = f(&mut v.0);
            if modified {
                v.1 += 1;
            }
            modified
        };
        if modified {
            self.wake();
        }
        modified
    }

    /// The value now.
    pub fn get(&self) -> T {
        self.0.value.lock().0.clone()
    }

    /// A watcher that has seen the current value.
    pub fn subscribe(&self) -> Watcher<T> {
        let seen = self.0.value.lock().1;
        Watcher {
            inner: Arc::clone(&self.0),
            seen,
        }
    }

    fn wake(&self) {
        // Pairs with the increment in `changed`: either this load sees the
        // waiter (and wakes it), or the waiter's read of the value, which
        // follows its increment, sees what was just published.
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.notify.notify_waiters();
        }
    }
}

impl<T> Drop for Signal<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
}

impl<T: Clone> Watcher<T> {
    /// The value now, marked as seen.
    pub fn borrow_and_update(&mut self) -> T {
        let v = self.inner.value.lock();
        self.seen = v.1;
        v.0.clone()
    }

    /// Wait until a value this watcher has not seen is published, and mark
    /// it seen. Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the value is checked: a publication after
            // the check wakes it.
            notified.as_mut().enable();
            let _waiting = Waiting::enter(&self.inner.waiting);
            let version = self.inner.value.lock().1;
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.inner.closed.load(Ordering::SeqCst) {
                return Err(Closed);
            }
            notified.await;
        }
    }
}

/// Counts a task in [`Watcher::changed`] until it returns or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A future that is polled only after something it waits on has woken it
/// (and on its first poll).
///
/// A loop that keeps a rarely-ready future in its `select!` next to the
/// busy one (a connection's "close on demotion or shutdown" next to its
/// socket read) polls it on every round, and a future made of channel waits
/// costs a few hundred instructions per poll even when nothing changed
/// (about 2% of a GET). Between wake-ups, a [`Gated`] poll is one atomic
/// swap.
///
/// It must be polled by one task only (tokio's per-task waker is then the
/// same on every poll, so the one it saw first is the one it wakes).
pub struct Gated<F> {
    inner: std::pin::Pin<Box<F>>,
    flag: Arc<WakeFlag>,
    waker: std::task::Waker,
}

struct WakeFlag {
    woken: AtomicBool,
    task: Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.lock().as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: std::future::Future> Gated<F> {
    pub fn new(inner: F) -> Gated<F> {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        let waker = std::task::Waker::from(flag.clone());
        Gated {
            inner: Box::pin(inner),
            flag,
            waker,
        }
    }
}

impl<F: std::future::Future> std::future::Future for Gated<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        if !this.flag.woken.swap(false, Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        {
            let mut task = this.flag.task.lock();
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut inner_cx = std::task::Context::from_waker(&this.waker);
        this.inner.as_mut().poll(&mut inner_cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_watcher_sees_a_value_published_after_it_subscribed() {
        let s = Signal::new(1u64);
        let mut w = s.subscribe();
        let waiter = tokio::spawn(async move {
            w.changed().await.unwrap();
            w.borrow_and_update()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.publish(2);
        assert_eq!(waiter.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_value_published_before_the_wait_completes_it_at_once() {
        let s = Signal::new(1u64);
        let mut w = s.subscribe();
        s.publish(5);
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.borrow_and_update(), 5);
        // Seen: the next wait needs a new publication.
        let pending = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
        assert!(pending.is_err(), "no new value, the wait goes on");
    }

    #[tokio::test]
    async fn an_unmodified_value_wakes_nobody() {
        let s = Signal::new(7u64);
        let mut w = s.subscribe();
        assert!(!s.publish_if(|v| {
            let changed = *v != 7;
            *v = 7;
            changed
        }));
        let pending = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
        assert!(pending.is_err());
        assert!(s.publish_if(|v| {
            *v = 8;
            true
        }));
        w.changed().await.unwrap();
        assert_eq!(w.borrow_and_update(), 8);
    }

    #[tokio::test]
    async fn dropping_the_signal_ends_every_wait() {
        let s = Signal::new(0u64);
        let mut w = s.subscribe();
        let waiter = tokio::spawn(async move { w.changed().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(s);
        assert_eq!(waiter.await.unwrap(), Err(Closed));
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_no_waiter_counted() {
        let s = Signal::new(0u64);
        let mut w = s.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(10), w.changed()).await;
        assert_eq!(s.0.waiting.load(Ordering::SeqCst), 0);
    }

    /// Many publishers and watchers on two threads: no watcher misses the
    /// last value (a lost wake-up would leave it waiting forever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_wakeup_is_lost_under_concurrent_publication() {
        let s = Arc::new(Signal::new(0u64));
        const LAST: u64 = 20_000;
        let mut waiters = Vec::new();
        for _ in 0..4 {
            let mut w = s.subscribe();
            waiters.push(tokio::spawn(async move {
                loop {
                    if w.borrow_and_update() == LAST {
                        return;
                    }
                    w.changed().await.unwrap();
                }
            }));
        }
        let publisher = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 1..=LAST {
                    s.publish(i);
                }
            })
        };
        publisher.join().unwrap();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("every watcher sees the last value")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_gated_future_is_polled_again_only_after_it_was_woken() {
        use std::future::Future;
        use std::sync::atomic::AtomicUsize;

        let signal = Signal::new(0u64);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut watcher = signal.subscribe();
        let counted = polls.clone();
        let mut gated = Gated::new(async move {
            counted.fetch_add(1, Ordering::SeqCst);
            // Counts each poll of the inner future until the value is 2.
            loop {
                if watcher.borrow_and_update() >= 2 {
                    return;
                }
                let _ = watcher.changed().await;
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut poll_once = || std::future::ready(std::pin::Pin::new(&mut gated).poll(&mut cx));
        assert!(poll_once().await.is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll reaches it");
        for _ in 0..10 {
            assert!(poll_once().await.is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "not woken: not polled");
        signal.publish(1);
        assert!(poll_once().await.is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2, "woken: polled once more");
        signal.publish(2);
        assert!(poll_once().await.is_ready());
    }

    #[tokio::test]
    async fn a_gated_wait_in_a_select_still_wakes_its_task() {
        let signal = Signal::new(false);
        let mut watcher = signal.subscribe();
        let gated = Gated::new(async move {
            while !watcher.borrow_and_update() {
                let _ = watcher.changed().await;
            }
        });
        let task = tokio::spawn(async move {
            tokio::pin!(gated);
            let mut rounds = 0u32;
            loop {
                tokio::select! {
                    biased;
                    () = &mut gated => return rounds,
                    () = tokio::time::sleep(std::time::Duration::from_millis(1)) => rounds += 1,
                }
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        signal.publish(true);
        let rounds = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the gated future woke its task")
            .expect("task");
        assert!(rounds > 0, "the select ran rounds while it waited");
    }
}
