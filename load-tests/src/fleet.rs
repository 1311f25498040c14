//! The simulated fleet: device names, which devices fail, one byte of state per device, and
//! the queue of devices waiting for their next check-in.
//!
//! Memory stays small at a million devices: a device is its index; its name and token are
//! made when it is its turn; its state is one byte; a device waiting to poll again is eight
//! bytes in a queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The name of device `i`.
pub fn device_id(i: u32) -> String {
    format!("dev-{i:08}")
}

/// SplitMix64: a fast, well-mixed hash of a device index and the seed.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Whether device `i` fails its installation (the same answer for every attempt).
pub fn fails(seed: u64, i: u32, share: f64) -> bool {
    let h = mix64(seed ^ (u64::from(i) << 1));
    ((h >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// Where a device's rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still taking part.
    Active = 0,
    /// Reported `success`.
    Success = 1,
    /// Reported its final `failure`.
    Failure = 2,
    /// Told by the server that its deployment is over (aborted or decommissioned).
    Stopped = 3,
}

/// One byte per device: the outcome in the low two bits, failed attempts above.
pub struct FleetState {
    states: Vec<AtomicU8>,
    finished: AtomicU64,
}

impl FleetState {
    /// `n` active devices.
    pub fn new(n: u32) -> Self {
        FleetState {
            states: (0..n).map(|_| AtomicU8::new(0)).collect(),
            finished: AtomicU64::new(0),
        }
    }

    /// Number of devices.
    pub fn len(&self) -> u32 {
        self.states.len() as u32
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Devices that have finished.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Failed attempts of device `i` so far.
    pub fn attempts(&self, i: u32) -> u32 {
        u32::from(self.states[i as usize].load(Ordering::Relaxed) >> 2)
    }

    /// Count one more failed attempt of device `i`; the new count.
    pub fn add_attempt(&self, i: u32) -> u32 {
        let prev = self.states[i as usize].fetch_add(4, Ordering::Relaxed);
        u32::from(prev >> 2) + 1
    }

    /// Device `i` is done with `outcome`.
    pub fn finish(&self, i: u32, outcome: Outcome) {
        let cell = &self.states[i as usize];
        let prev = cell.fetch_and(!3, Ordering::Relaxed);
        cell.fetch_or(outcome as u8, Ordering::Relaxed);
        if prev & 3 == Outcome::Active as u8 && outcome != Outcome::Active {
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Devices per outcome: active, success, failure, stopped.
    pub fn counts(&self) -> [u64; 4] {
        let mut c = [0u64; 4];
        for s in &self.states {
            c[(s.load(Ordering::Relaxed) & 3) as usize] += 1;
        }
        c
    }
}

/// What a worker should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Run device `i`'s session now.
    Device(u32),
    /// Nobody is due before this instant.
    WaitUntil(Instant),
    /// Every device is finished or busy with another worker.
    Idle,
}

/// Hands devices to workers: first each device once, in order, then the devices that polled
/// and must poll again, when their interval has passed.
pub struct Scheduler {
    n: u32,
    start: Instant,
    poll: Duration,
    inner: Mutex<Queue>,
}

struct Queue {
    /// The next device that has not run yet.
    fresh: u32,
    /// Devices waiting to poll again, with their due time in milliseconds since `start`.
    /// The interval is the same for all, so pushing at the back keeps it ordered.
    parked: VecDeque<(u32, u32)>,
}

impl Scheduler {
    /// A scheduler of `n` devices that poll every `poll`.
    pub fn new(n: u32, poll: Duration) -> Self {
        Scheduler {
            n,
            start: Instant::now(),
            poll,
            inner: Mutex::new(Queue {
                fresh: 0,
                parked: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next device to run, or how long to wait.
    pub fn next(&self) -> Next {
        let now_ms = self.start.elapsed().as_millis() as u64;
        let mut q = self.lock();
        if let Some(&(i, due)) = q.parked.front() {
            if u64::from(due) <= now_ms {
                q.parked.pop_front();
                return Next::Device(i);
            }
        }
        if q.fresh < self.n {
            q.fresh += 1;
            return Next::Device(q.fresh - 1);
        }
        match q.parked.front() {
            Some(&(_, due)) => Next::WaitUntil(self.start + Duration::from_millis(due.into())),
            None => Next::Idle,
        }
    }

    /// Device `i` polls again after the poll interval.
    pub fn park(&self, i: u32) {
        let due = (self.start.elapsed() + self.poll).as_millis();
        let due = u32::try_from(due).unwrap_or(u32::MAX);
        self.lock().parked.push_back((i, due));
    }
}

/// A small, fast, seeded generator for the `mixed` mode's picks (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded; never zero.
    pub fn new(seed: u64) -> Self {
        Rng(mix64(seed) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_zero_padded() {
        assert_eq!(device_id(7), "dev-00000007");
        assert_eq!(device_id(999_999), "dev-00999999");
    }

    #[test]
    fn the_failing_share_is_close_to_the_request() {
        let n = 100_000;
        let failing = (0..n).filter(|&i| fails(1, i, 0.05)).count();
        assert!((4_500..5_500).contains(&failing), "{failing}");
        assert_eq!((0..n).filter(|&i| fails(1, i, 0.0)).count(), 0);
        assert_eq!((0..n).filter(|&i| fails(1, i, 1.0)).count(), n as usize);
    }

    #[test]
    fn states_count_outcomes_and_attempts() {
        let f = FleetState::new(4);
        assert_eq!(f.add_attempt(1), 1);
        assert_eq!(f.add_attempt(1), 2);
        f.finish(1, Outcome::Failure);
        f.finish(2, Outcome::Success);
        f.finish(2, Outcome::Success);
        assert_eq!(f.attempts(1), 2);
        assert_eq!(f.finished(), 2);
        assert_eq!(f.counts(), [2, 1, 1, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn parked_devices_come_back_after_the_poll_interval() {
        let s = Scheduler::new(2, Duration::from_secs(1));
        assert_eq!(s.next(), Next::Device(0));
        s.park(0);
        assert_eq!(s.next(), Next::Device(1));
        assert!(matches!(s.next(), Next::WaitUntil(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.next(), Next::Device(0));
        assert_eq!(s.next(), Next::Idle);
    }
}
