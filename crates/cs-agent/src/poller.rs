//! One shared host poller: every host waiting for a state (Up at the target after its restart)
//! is answered from one listing of all hypervisors per interval, instead of a request per
//! waiting host. A thousand hosts waiting cost one paged `listHosts` per interval.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cs_core::{BoxError, HostStatus, HypervisorState, StatePredicate};
use tokio::time::Instant;

/// Answers [`HostStatus::wait_for`] for many waiters from one shared listing
/// ([`HostStatus::hypervisors`]) per interval. The interval adapts: `fast` while a waiter is
/// within `expect` of starting to wait (its host is expected back), `slow` once every waiter
/// has waited longer (hosts that are late, probably failing, need not be asked for often).
/// Nobody waiting, nothing is asked. A point query ([`HostStatus::hypervisor`]) is answered
/// from the last listing while it is younger than `fast` (no staler than what a waiter
/// accepts; in a rolling refresh the hosts checking before their restart and after their wait
/// find one there), and goes to the wrapped status otherwise, or when the listing does not
/// hold the host. An implementation that cannot list in bulk is asked host by host, as
/// without the poller.
#[derive(Debug)]
pub struct HostPoller {
    inner: Arc<dyn HostStatus>,
    fast: Duration,
    slow: Duration,
    expect: Duration,
    /// Held while a listing is fetched: the other waiters wait for it instead of asking too.
    cache: tokio::sync::Mutex<Cache>,
    /// Waiters and when each started waiting.
    waiters: Mutex<BTreeMap<u64, Instant>>,
    next_waiter: AtomicU64,
    requests: AtomicU64,
}

/// A listing: when it was asked for, and what it held.
type Listing = (Instant, Arc<Vec<HypervisorState>>);

#[derive(Debug, Default)]
struct Cache {
    /// The last listing.
    last: Option<Listing>,
    /// When the last attempt started (a failed one included), for pacing.
    tried: Option<Instant>,
    /// The wrapped status cannot list in bulk.
    unsupported: bool,
}

impl HostPoller {
    /// A poller over `inner`, listing every `fast` while hosts are expected back (within
    /// `expect` of their waiter starting) and every `slow` otherwise.
    pub fn new(
        inner: Arc<dyn HostStatus>,
        fast: Duration,
        slow: Duration,
        expect: Duration,
    ) -> Arc<HostPoller> {
        Arc::new(HostPoller {
            inner,
            fast,
            slow: slow.max(fast),
            expect,
            cache: tokio::sync::Mutex::new(Cache::default()),
            waiters: Mutex::new(BTreeMap::new()),
            next_waiter: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    /// Requests made to the wrapped status so far (listings and point queries).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The interval now: `fast` while some waiter's host is expected back, else `slow`.
    fn interval(&self) -> Duration {
        let now = Instant::now();
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters
            .values()
            .any(|start| now.saturating_duration_since(*start) < self.expect)
        {
            self.fast
        } else {
            self.slow
        }
    }

    /// A listing asked for after `after`, waiting for the next one when the last is older;
    /// `Ok(None)` when `end` comes first or the wrapped status cannot list in bulk.
    async fn listing_after(
        &self,
        after: Instant,
        end: Instant,
    ) -> Result<Option<Listing>, BoxError> {
        loop {
            let mut c = self.cache.lock().await;
            if c.unsupported {
                return Ok(None);
            }
            if let Some((at, hosts)) = &c.last
                && *at > after
            {
                return Ok(Some((*at, hosts.clone())));
            }
            let now = Instant::now();
            let due = c.tried.map_or(now, |t| t + self.interval());
            if now >= due {
                c.tried = Some(now);
                self.requests.fetch_add(1, Ordering::Relaxed);
                // Fetched with the lock held: waiters arriving meanwhile get this listing.
                return match self.inner.hypervisors().await? {
                    Some(hosts) => {
                        let hosts = Arc::new(hosts);
                        c.last = Some((now, hosts.clone()));
                        Ok(Some((now, hosts)))
                    }
                    None => {
                        c.unsupported = true;
                        Ok(None)
                    }
                };
            }
            drop(c);
            if now >= end {
                return Ok(None);
            }
            // Not past `due` by more than the fast interval: a waiter arriving meanwhile
            // may shorten the interval.
            tokio::time::sleep_until(due.min(end).min(now + self.fast)).await;
        }
    }
}

/// Removes a waiter when its wait ends (or is dropped).
struct Waiter<'a>(&'a HostPoller, u64);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

#[async_trait]
impl HostStatus for HostPoller {
    async fn hypervisor(&self, key: &str) -> Result<Option<HypervisorState>, BoxError> {
        // A listing being fetched holds the lock: waiting for it gives the freshest answer.
        let fresh = self
            .cache
            .lock()
            .await
            .last
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.fast)
            .map(|(_, hosts)| hosts.clone());
        if let Some(h) = fresh.and_then(|hosts| hosts.iter().find(|h| h.matches(key)).cloned()) {
            return Ok(Some(h));
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.hypervisor(key).await
    }

    async fn hypervisors(&self) -> Result<Option<Vec<HypervisorState>>, BoxError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.hypervisors().await
    }

    async fn wait_for(
        &self,
        key: &str,
        until: StatePredicate<'_>,
        deadline: Duration,
        poll: Duration,
    ) -> Result<Option<HypervisorState>, BoxError> {
        let start = Instant::now();
        let end = start + deadline;
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, start);
        let _waiter = Waiter(self, id);
        // Only a listing asked for after the wait began counts: one from before could show
        // the host as it was before its restart.
        let mut after = start;
        let mut seen: Option<HypervisorState> = None;
        loop {
            let Some((at, hosts)) = self.listing_after(after, end).await? else {
                if self.cache.lock().await.unsupported {
                    let left = end.saturating_duration_since(Instant::now());
                    return self.inner.wait_for(key, until, left, poll).await;
                }
                return Ok(seen);
            };
            after = at;
            seen = hosts.iter().find(|h| h.matches(key)).cloned();
            if until(seen.as_ref()) || Instant::now() >= end {
                return Ok(seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cs_core::CsVersion;

    /// A management server of `n` hosts, each Up at the target once its time has come;
    /// counts requests.
    #[derive(Debug)]
    struct Sim {
        up_at: Vec<Instant>,
        listings: AtomicU64,
        points: AtomicU64,
        bulk: bool,
    }

    impl Sim {
        fn state(&self, i: usize) -> HypervisorState {
            let up = Instant::now() >= self.up_at[i];
            HypervisorState {
                id: format!("id-{i}"),
                name: format!("kvm{i}"),
                state: if up { "Up" } else { "Disconnected" }.into(),
                resource_state: None,
                version: up.then(|| CsVersion::parse("4.19.1.0").unwrap()),
                address: Some(format!("10.0.0.{i}")),
            }
        }
    }

    #[async_trait]
    impl HostStatus for Sim {
        async fn hypervisor(&self, key: &str) -> Result<Option<HypervisorState>, BoxError> {
            self.points.fetch_add(1, Ordering::Relaxed);
            Ok((0..self.up_at.len())
                .map(|i| self.state(i))
                .find(|h| h.matches(key)))
        }

        async fn hypervisors(&self) -> Result<Option<Vec<HypervisorState>>, BoxError> {
            if !self.bulk {
                return Ok(None);
            }
            self.listings.fetch_add(1, Ordering::Relaxed);
            Ok(Some((0..self.up_at.len()).map(|i| self.state(i)).collect()))
        }
    }

    fn sim(n: usize, after: Duration, bulk: bool) -> Arc<Sim> {
        let now = Instant::now();
        Arc::new(Sim {
            up_at: (0..n)
                .map(|i| now + after * (i as u32 + 1) / n as u32)
                .collect(),
            listings: AtomicU64::new(0),
            points: AtomicU64::new(0),
            bulk,
        })
    }

    fn up(h: Option<&HypervisorState>) -> bool {
        h.is_some_and(|h| h.is_up())
    }

    async fn wait_all(p: &HostPoller, n: usize, deadline: Duration) -> Vec<bool> {
        let waits = (0..n).map(|i| async move {
            let key = if i % 2 == 0 {
                format!("kvm{i}")
            } else {
                format!("10.0.0.{i}")
            };
            let h = p
                .wait_for(&key, &up, deadline, Duration::from_millis(20))
                .await
                .unwrap();
            up(h.as_ref())
        });
        futures::future::join_all(waits).await
    }

    #[tokio::test]
    async fn many_waiters_share_one_listing_per_interval() {
        let s = sim(200, Duration::from_millis(400), true);
        let fast = Duration::from_millis(50);
        let p = HostPoller::new(
            s.clone(),
            fast,
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        let start = Instant::now();
        let ok = wait_all(&p, 200, Duration::from_secs(5)).await;
        let took = start.elapsed();
        assert!(ok.iter().all(|u| *u));
        let listings = s.listings.load(Ordering::Relaxed);
        // One listing per interval while waiting (plus the first), not one per host.
        let intervals = (took.as_millis() / fast.as_millis()) as u64 + 1;
        assert!(listings <= intervals, "{listings} listings in {took:?}");
        assert!(listings >= 2, "{listings}");
        assert_eq!(s.points.load(Ordering::Relaxed), 0);
        assert_eq!(p.requests(), listings);
        // The last host came back at 400 ms: seen within about one interval.
        assert!(took < Duration::from_millis(400) + fast * 4, "{took:?}");
    }

    #[tokio::test]
    async fn a_point_query_is_answered_from_a_fresh_listing() {
        let s = sim(4, Duration::from_millis(10), true);
        let fast = Duration::from_millis(300);
        let p = HostPoller::new(
            s.clone(),
            fast,
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        // Nothing listed yet: asked.
        assert!(p.hypervisor("kvm1").await.unwrap().is_some());
        assert_eq!(s.points.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let h = p
            .wait_for("kvm2", &up, Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap();
        assert!(up(h.as_ref()));
        let listings = s.listings.load(Ordering::Relaxed);
        // Right after the wait: from its listing, by name or address, no request.
        let h = p.hypervisor("10.0.0.2").await.unwrap();
        assert_eq!(h.map(|h| h.name).as_deref(), Some("kvm2"));
        assert_eq!(s.points.load(Ordering::Relaxed), 1);
        // A host the listing does not hold is asked for.
        assert!(p.hypervisor("kvm9").await.unwrap().is_none());
        assert_eq!(s.points.load(Ordering::Relaxed), 2);
        // Once the listing is older than the fast interval: asked again.
        tokio::time::sleep(fast).await;
        assert!(p.hypervisor("kvm2").await.unwrap().is_some());
        assert_eq!(s.points.load(Ordering::Relaxed), 3);
        assert_eq!(s.listings.load(Ordering::Relaxed), listings);
        assert_eq!(p.requests(), listings + 3);
    }

    #[tokio::test]
    async fn late_hosts_are_asked_for_slowly() {
        // Nobody comes back; waiters are past `expect` after 100 ms: the slow interval.
        let s = sim(10, Duration::from_secs(60), true);
        let p = HostPoller::new(
            s.clone(),
            Duration::from_millis(20),
            Duration::from_millis(200),
            Duration::from_millis(100),
        );
        let ok = wait_all(&p, 10, Duration::from_millis(700)).await;
        assert!(ok.iter().all(|u| !*u));
        let listings = s.listings.load(Ordering::Relaxed);
        // About 5 fast listings in the first 100 ms, then one per 200 ms: far under the 35 a
        // fast interval would take.
        assert!((5..=12).contains(&listings), "{listings}");
    }

    #[tokio::test]
    async fn without_a_bulk_listing_each_host_is_asked() {
        let s = sim(4, Duration::from_millis(100), false);
        let p = HostPoller::new(
            s.clone(),
            Duration::from_millis(20),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let ok = wait_all(&p, 4, Duration::from_secs(2)).await;
        assert!(ok.iter().all(|u| *u));
        assert!(s.points.load(Ordering::Relaxed) >= 4);
        assert_eq!(s.listings.load(Ordering::Relaxed), 0);
    }

    /// One host whose state the test sets; counts listings.
    #[derive(Debug, Default)]
    struct Switch {
        up: std::sync::atomic::AtomicBool,
        listings: AtomicU64,
    }

    #[async_trait]
    impl HostStatus for Switch {
        async fn hypervisor(&self, _key: &str) -> Result<Option<HypervisorState>, BoxError> {
            Err("the poller must not ask host by host".into())
        }

        async fn hypervisors(&self) -> Result<Option<Vec<HypervisorState>>, BoxError> {
            self.listings.fetch_add(1, Ordering::Relaxed);
            let up = self.up.load(Ordering::Relaxed);
            Ok(Some(vec![HypervisorState {
                id: "id-0".into(),
                name: "kvm0".into(),
                state: if up { "Up" } else { "Disconnected" }.into(),
                resource_state: None,
                version: None,
                address: None,
            }]))
        }
    }

    #[tokio::test]
    async fn a_listing_from_before_the_wait_is_not_used() {
        let s = Arc::new(Switch::default());
        s.up.store(true, Ordering::Relaxed);
        let p = HostPoller::new(
            s.clone(),
            Duration::from_millis(10),
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        let h = p
            .wait_for("kvm0", &up, Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap();
        assert!(up(h.as_ref()));
        // The host restarts: a new wait must not be answered by the listing that saw it Up.
        s.up.store(false, Ordering::Relaxed);
        let h = p
            .wait_for("kvm0", &up, Duration::from_millis(100), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(h.map(|h| h.state).as_deref(), Some("Disconnected"));
        assert!(s.listings.load(Ordering::Relaxed) >= 2);
    }

    #[tokio::test]
    async fn a_new_waiter_makes_the_interval_fast_again() {
        // kvm0 never comes back: its waiter is past `expect` after 100 ms and the poller
        // slows to one listing per 400 ms. A second waiter arriving at 300 ms is within
        // `expect`: listings come every 20 ms again while it waits.
        let s = Arc::new(Switch::default());
        let p = HostPoller::new(
            s.clone(),
            Duration::from_millis(20),
            Duration::from_millis(400),
            Duration::from_millis(100),
        );
        let first = p.wait_for("kvm0", &up, Duration::from_millis(800), Duration::ZERO);
        let second = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = s.listings.load(Ordering::Relaxed);
            p.wait_for("kvm0", &up, Duration::from_millis(200), Duration::ZERO)
                .await
                .unwrap();
            (before, s.listings.load(Ordering::Relaxed))
        };
        let (a, (before, after)) = futures::join!(first, second);
        assert!(!up(a.unwrap().as_ref()));
        // 100 ms fast (about 5 listings), then slow: at most one more by 300 ms.
        assert!(before <= 7, "{before} listings before the second waiter");
        // 200 ms at the fast interval: about 10; the slow one would allow at most 1.
        assert!(after - before >= 4, "{} listings", after - before);
    }

    #[tokio::test]
    async fn an_unknown_host_is_none_at_the_deadline() {
        let s = sim(2, Duration::from_millis(10), true);
        let p = HostPoller::new(
            s,
            Duration::from_millis(20),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let start = Instant::now();
        let h = p
            .wait_for("kvm9", &up, Duration::from_millis(150), Duration::ZERO)
            .await
            .unwrap();
        assert!(h.is_none());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(1));
    }
}
