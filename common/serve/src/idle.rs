//! The header-read timeout, kept off the request path: a connection with no request in
//! flight that starts none for [`ConnectionLimits::header_read_timeout`] is closed, be it
//! a client trickling the bytes of its headers, one that never sends any, or a kept-alive
//! connection left idle.
//!
//! hyper's own `header_read_timeout` does the same with a timer armed (allocated,
//! registered and cancelled) for every request; that measured about 3 % of POST
//! throughput. Here each request costs two atomic increments and a decrement on its own
//! connection's counters, and a watchdog per connection looks at them every half
//! timeout: a connection is closed between one and one and a half timeouts after its
//! last request ended.
//!
//! [`ConnectionLimits::header_read_timeout`]: crate::ConnectionLimits::header_read_timeout

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;

/// What a connection's watchdog sees of it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Requests whose headers were read, ever.
    started: AtomicU64,
    /// Requests whose responses are not finished yet.
    in_flight: AtomicUsize,
}

/// One request of a connection, from its headers read until its response is finished
/// (or dropped unfinished).
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(crate) fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`InFlight`] until hyper has written it all
/// (a stream counts as in flight as long as it runs).
pub(crate) struct Watched<B> {
    pub(crate) body: B,
    pub(crate) _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Watched<B> {
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

/// Watches `activity` every half `timeout` and aborts `connection` (which closes its
/// socket) once two looks in a row found no request in flight and none started. Ends
/// by itself when the connection ends (nothing else holds `activity` then).
pub(crate) async fn watchdog(activity: Weak<Activity>, timeout: Duration, connection: AbortHandle) {
    let mut ticks = tokio::time::interval(timeout / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // The first tick is now.
    let (mut seen, mut quiet) = (0, 0);
    loop {
        ticks.tick().await;
        let Some(activity) = activity.upgrade() else {
            return;
        };
        let started = activity.started.load(Ordering::Relaxed);
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        if busy || started != seen {
            (seen, quiet) = (started, 0);
            continue;
        }
        quiet += 1;
        if quiet >= 2 {
            tracing::debug!(?timeout, "closing a connection without a request");
            connection.abort();
            return;
        }
    }
}
