//! The HTTP server loop: accepts connections, gives every request its `X-MEN-RequestID`,
//! runs the warp routes, and drains in-flight requests on shutdown. It bounds what idle or
//! slow clients can hold: connections at once, time to send headers, time without any
//! activity, and (through [`body::TimedBody`]) time between pieces of a request body.

pub mod body;
mod connection;

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use http::{HeaderValue, Request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use self::connection::{Activity, Handling, Tracked};
use crate::request_id::{RequestId, REQUEST_ID, REQUEST_ID_HEADER};

/// Errors a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;
/// A response.
pub type HttpResponse = http::Response<ResponseBody>;
/// The application: turns a request into a response.
pub type App =
    std::sync::Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, HttpResponse> + Send + Sync>;

/// `--access-log`: one info line per request (log target `access`) with its request id,
/// method, path, status and latency. Every request is logged, none sampled; it is off by
/// default because a busy fleet makes thousands of check-ins a second.
pub fn with_access_log(app: App) -> App {
    std::sync::Arc::new(move |req| {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let started = Instant::now();
        let answer = app(req);
        async move {
            let response = answer.await;
            tracing::info!(
                target: "access",
                request_id = %RequestId::current(),
                %method,
                %path,
                status = response.status().as_u16(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "request"
            );
            response
        }
        .boxed()
    })
}

/// Turn a warp response into ours.
pub fn from_warp(response: warp::reply::Response) -> HttpResponse {
    response.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
}

/// Bounds of the server loop against clients that hold connections without using them.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once. At the bound the server stops accepting, so new
    /// clients wait in the listen backlog instead of taking file descriptors.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from its first
    /// byte, or, on a kept-alive connection, from the end of the previous response.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved and no request was handled for this long is
    /// closed, whatever it waits for (the next request, or a client that stopped reading).
    pub idle_timeout: Duration,
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting and wait for
/// the requests in flight to finish.
pub async fn run(
    listener: TcpListener,
    app: App,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    // HTTP/1 only, on hyper's own builder: hyper-util's auto builder first waits for the
    // bytes that tell HTTP/1 from HTTP/2, with no timeout, so a silent client would escape
    // the header read timeout.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = AcceptBackoff::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff.accepted();
                    conn
                }
                Err(e) => {
                    let pause = backoff.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Tracked::new(stream, activity.clone()));
        let service = {
            let (app, activity) = (app.clone(), activity.clone());
            hyper::service::service_fn(move |req: Request<Incoming>| {
                handle(app.clone(), activity.handling(), req)
            })
        };
        let conn = graceful.watch(builder.serve_connection(io, service));
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = activity.idle(idle_timeout) => {
                    tracing::debug!(%peer, "closing an idle connection");
                }
            }
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    graceful.shutdown().await;
    tracing::info!("all connections closed");
}

/// Pauses between failed accepts, and their log lines.
///
/// When the process runs out of file descriptors (`EMFILE`), `accept` fails at once for as
/// long as the pending connection stays in the backlog: retrying without a pause spins a
/// core and writes a warning per try. The pause doubles from 10 ms up to 1 s and resets on
/// the next success; the warning is written at most once a second, with the number of
/// failures it stands for.
struct AcceptBackoff {
    pause: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(1);

    fn new() -> Self {
        AcceptBackoff {
            pause: Self::FIRST,
            last_log: None,
            unlogged: 0,
        }
    }

    fn accepted(&mut self) {
        self.pause = Self::FIRST;
    }

    /// Note a failed accept; returns how long to wait before the next.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        // A connection the peer gave up on before it was accepted says nothing about the
        // server: try the next one at once.
        if matches!(
            error.kind(),
            ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
        ) {
            tracing::debug!(%error, "accept: connection gone before it was accepted");
            return Duration::ZERO;
        }
        let pause = self.pause;
        self.pause = (pause * 2).min(Self::MAX);
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= Self::LOG_EVERY)
        {
            tracing::warn!(
                %error,
                failures_since_last_warning = self.unlogged,
                pause_ms = pause.as_millis() as u64,
                "accept failed; pausing before the next accept"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        pause
    }
}

/// Raise the soft limit on open files to the hard limit, and warn when it is still too
/// low for `max_connections` (each connection takes a descriptor, and the store, downloads
/// and uploads take more).
pub fn raise_open_files_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let wanted = max_connections as u64 + RESERVED_FILES;
            if limit < wanted {
                tracing::warn!(
                    open_files_limit = limit,
                    max_connections,
                    reserved = RESERVED_FILES,
                    "the open files limit (RLIMIT_NOFILE) is below --max-connections plus the \
                     files the server keeps open: under load, accepts and file opens will \
                     fail; raise the limit or lower --max-connections"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open files limit"),
    }
}

/// Descriptors the server needs besides its connections: the store's files, logs, the
/// listener, and the blobs of downloads and uploads in progress.
const RESERVED_FILES: u64 = 256;

/// Run one request through the app with its request id in scope, and put the id on the
/// response. `_handling` marks the connection busy until the handler has answered.
async fn handle(
    app: App,
    _handling: Handling,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let id = RequestId::from_headers(req.headers());
    let method = req.method().clone();
    // A clone of the URI shares its bytes: no copy of the path per request.
    let uri = req.uri().clone();
    let has_body = !hyper::body::Body::is_end_stream(req.body());
    let mut response = REQUEST_ID.scope(id.clone(), app(req)).await;
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, id.header_value());
    if response.status() == http::StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = crate::routes::openapi::allowed_methods(uri.path()) {
            response
                .headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allow));
        }
    }
    // A refusal may come before the body was read (an upload over a limit, a malformed
    // multipart head). hyper then closes the connection after the answer; saying so lets
    // the client open a new one for its next request instead of writing into a closed one.
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    crate::metrics::record_request(&method, uri.path(), response.status(), started.elapsed());
    Ok(response)
}

/// Bind `addr` (port 0 allowed) and return the listener and the address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
