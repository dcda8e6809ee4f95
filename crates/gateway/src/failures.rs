//! Failed sign-ins (HTTP Basic and the login page) counted per client address and per
//! user name over a sliding window: past the limit on either, the attempt is answered 429
//! with Retry-After before any password is hashed. Per address stops one client guessing
//! many names; per user stops many addresses (a botnet) guessing one name. The price of
//! the second: a flood aimed at a name locks that name out for the window, but a user
//! whose credentials were checked good in the last minutes keeps working (basic_auth
//! remembers them) and the window is short.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Addr(IpAddr),
    User(String),
}

pub struct Failures {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

/// Past this many keys, expired ones are swept before a new one is added: the table
/// cannot grow with names an attacker makes up faster than the window empties it.
const SWEEP_ABOVE: usize = 10_000;

impl Failures {
    pub fn new(limit: u32, window: Duration) -> Failures {
        Failures {
            limit,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Starts an attempt: Err(wait) if a key is over its limit, else the attempt is
    /// counted as a failure at once (under the same lock), and `forgive` takes it back if
    /// it succeeds. Counting only after the check would let a thousand attempts sent at
    /// once all pass the limit while their hashes queue.
    pub fn begin(&self, keys: &[Key]) -> Result<(), Duration> {
        let mut seen = self.seen.lock().expect("not poisoned");
        if let Some(wait) = self.wait(&mut seen, keys) {
            return Err(wait);
        }
        self.note(&mut seen, keys);
        Ok(())
    }

    /// An attempt that `begin` counted succeeded: it is not a failure, and the address's
    /// earlier failures are cleared (a user who mistyped twice starts over).
    pub fn forgive(&self, keys: &[Key]) {
        let mut seen = self.seen.lock().expect("not poisoned");
        for k in keys {
            match k {
                Key::Addr(_) => {
                    seen.remove(k);
                }
                Key::User(_) => {
                    if let Some(l) = seen.get_mut(k) {
                        l.pop_back();
                    }
                }
            }
        }
    }

    /// How long until an attempt under all of `keys` may be made, if one is over its
    /// limit now.
    pub fn blocked(&self, keys: &[Key]) -> Option<Duration> {
        let mut seen = self.seen.lock().expect("not poisoned");
        self.wait(&mut seen, keys)
    }

    fn wait(&self, seen: &mut HashMap<Key, VecDeque<Instant>>, keys: &[Key]) -> Option<Duration> {
        let now = Instant::now();
        keys.iter()
            .filter_map(|k| {
                let list = seen.get_mut(k)?;
                while list.front().is_some_and(|t| now - *t >= self.window) {
                    list.pop_front();
                }
                (list.len() as u32 >= self.limit)
                    .then(|| self.window - (now - *list.front().expect("over a limit > 0")))
            })
            .max()
    }

    /// Notes a failed attempt under each of `keys`.
    pub fn failed(&self, keys: &[Key]) {
        let mut seen = self.seen.lock().expect("not poisoned");
        self.note(&mut seen, keys);
    }

    fn note(&self, seen: &mut HashMap<Key, VecDeque<Instant>>, keys: &[Key]) {
        let now = Instant::now();
        if seen.len() > SWEEP_ABOVE {
            seen.retain(|_, l| l.back().is_some_and(|t| now - *t < self.window));
        }
        for k in keys {
            let list = seen.entry(k.clone()).or_default();
            list.push_back(now);
            // Only the newest `limit` matter.
            while list.len() > self.limit as usize {
                list.pop_front();
            }
        }
    }
}

/// Seconds for a Retry-After header: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_per_user() {
        let f = Failures::new(2, Duration::from_secs(60));
        let a = Key::Addr("192.0.2.1".parse().unwrap());
        let b = Key::Addr("192.0.2.2".parse().unwrap());
        let anne = Key::User("anne".into());
        let bob = Key::User("bob".into());
        f.failed(&[a.clone(), anne.clone()]);
        assert!(f.blocked(&[a.clone(), bob.clone()]).is_none());
        f.failed(&[b.clone(), anne.clone()]);
        let wait = f.blocked(&[b.clone(), anne.clone()]).expect("anne twice");
        assert!(wait <= Duration::from_secs(60) && retry_after_secs(wait) >= 59);
        assert!(f.blocked(&[a.clone(), bob.clone()]).is_none(), "a once");
        f.failed(&[a.clone(), bob.clone()]);
        assert!(f.blocked(&[a.clone(), Key::User("carol".into())]).is_some());
        let only_a = [a.clone()];
        f.forgive(&only_a);
        assert!(f.blocked(&[a, Key::User("carol".into())]).is_none());
        // Attempts begun count at once: the third of three sent together is refused.
        let g = Failures::new(2, Duration::from_secs(60));
        assert!(g.begin(&only_a).is_ok() && g.begin(&only_a).is_ok());
        assert!(g.begin(&only_a).is_err());
        g.forgive(&only_a);
        assert!(g.begin(&only_a).is_ok(), "a success clears the address");
    }
}
