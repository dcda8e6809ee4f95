//! The clock on each client connection: how long it may take to send a request's head, and
//! how long it may sit idle between requests. hyper's own header timer starts when a
//! connection goes idle too, so it cannot tell "slow head" from "idle keep-alive"; this
//! watches the connection from outside instead: its reads (through `Watched`), the
//! requests in flight (a `Tracked` response body each, counted until hyper drops it), and
//! says when the connection is over its time.
//!
//! - No request in flight and bytes of a head received (or the connection just opened):
//!   the head must be complete within the header read timeout.
//! - No request in flight and nothing received since the last response: the connection
//!   may stay idle for the keep-alive time.
//! - A request in flight: no deadline here (the route's upstream timeouts apply).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Marks "no head being received" in `head_started`.
const NONE: u64 = u64::MAX;

/// One connection's activity, shared by its reader, its responses and its watchdog. Times
/// are milliseconds since `start`.
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    header_read: Duration,
    keepalive: Duration,
}

impl Activity {
    pub fn new(header_read: Duration, keepalive: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first head from the moment it opened.
            head_started: AtomicU64::new(0),
            header_read,
            keepalive,
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read_some(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now();
            let _ =
                self.head_started
                    .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// A request's head was read and handed to the service.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
    }

    fn response_done(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.head_started.store(NONE, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the connection runs out of time as things stand (None: a request is in
    /// flight, no deadline).
    pub fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, d: Duration| self.start + Duration::from_millis(ms) + d;
        match self.head_started.load(Ordering::Acquire) {
            NONE => Some((
                at(self.idle_since.load(Ordering::Acquire), self.keepalive),
                Expiry::Idle,
            )),
            t => Some((at(t, self.header_read), Expiry::SlowHead)),
        }
    }
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    SlowHead,
    Idle,
}

/// Waits until the connection is over its time (re-reading the deadline as it moves).
pub async fn expired(act: &Activity) -> Expiry {
    loop {
        match act.deadline() {
            Some((at, why)) if at <= Instant::now() => return why,
            Some((at, _)) => tokio::time::sleep_until(at).await,
            // In flight: look again later; a response ending does not wake this.
            None => tokio::time::sleep(act.header_read.min(act.keepalive)).await,
        }
    }
}

/// A client stream whose reads are reported to its `Activity`.
pub struct Watched<S> {
    pub inner: S,
    pub act: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.act.read_some();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that counts as a request in flight until hyper drops it (written out,
/// or the connection gone).
pub struct Tracked<B> {
    body: B,
    act: Arc<Activity>,
}

impl<B> Tracked<B> {
    /// Call when the request has started (`Activity::request_started`).
    pub fn new(body: B, act: Arc<Activity>) -> Self {
        Tracked { body, act }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.act.response_done();
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn head_idle_and_in_flight_clocks() {
        let act = Activity::new(Duration::from_millis(50), Duration::from_secs(5));
        assert_eq!(
            act.deadline().unwrap().1,
            Expiry::SlowHead,
            "a new connection"
        );
        act.request_started();
        assert!(act.deadline().is_none(), "in flight");
        let body = Tracked::new((), act.clone());
        drop(body);
        let (at, why) = act.deadline().unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(at >= Instant::now() + Duration::from_secs(4));
        act.read_some();
        assert_eq!(act.deadline().unwrap().1, Expiry::SlowHead, "a head begun");
        assert_eq!(expired(&act).await, Expiry::SlowHead);
    }
}
