//! Serving connections within limits, so that no client can take from the daemon
//! what it needs to keep capturing writes (its file descriptors): at most
//! [`Limits::connections`] at once (the next waits in the kernel's queue until one
//! closes), a request's head read within [`Limits::head`] (a client that trickles
//! its headers is cut off), and a connection that has sent and received nothing for
//! [`Limits::idle`] while no request is being answered closed. A request is being
//! answered until its response's body has been sent, so an event stream is never
//! idle (and there are at most 64 of those).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

/// How much of the daemon the API's clients may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// How long a request's head (its line and headers) may take to arrive.
    pub head: Duration,
    /// How long a connection may stay silent both ways between requests.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 128,
            head: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// How long connections still open at shutdown are given to finish.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` within `limits` until `stop` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // taken: wait a moment rather than spin.
                    tracing::warn!(error = %e, "the API could not take a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            let router = router.clone();
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let answering = activity.answering();
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await;
                    response.map(|r| {
                        r.map(|body| {
                            axum::body::Body::new(Answered {
                                body,
                                _answering: answering,
                            })
                        })
                    })
                }
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.head)
            .serve_connection(
                TokioIo::new(Watched::new(stream, activity.clone())),
                service,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = connection => {}
                () = activity.silent_for(limits.idle) => {}
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {}
    }
    Ok(())
}

/// When a connection last moved a byte, and how many of its requests are being
/// answered.
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    since: Instant,
    last_ms: AtomicU64,
    answering: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(ActivityState {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
        }))
    }

    fn moved(&self) {
        let ms = self.0.since.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a request being answered until the guard is dropped.
    fn answering(&self) -> Answering {
        self.0.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    /// Resolves once the connection has moved nothing for `idle` with no request
    /// being answered.
    async fn silent_for(&self, idle: Duration) {
        loop {
            let last = self.0.since + Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed));
            if Instant::now() >= last + idle {
                if self.0.answering.load(Ordering::Relaxed) == 0 {
                    return;
                }
                self.moved();
                continue;
            }
            tokio::time::sleep_until(last + idle).await;
        }
    }
}

struct Answering(Activity);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.moved();
        self.0.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response's body, which keeps its request [`Answering`] until it is sent or
/// dropped.
struct Answered {
    body: axum::body::Body,
    _answering: Answering,
}

impl http_body::Body for Answered {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection that notes each byte it moves in its [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Activity,
}

impl Watched {
    fn new(stream: TcpStream, activity: Activity) -> Watched {
        Watched { stream, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
