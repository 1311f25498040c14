//! The HTTP server loop: accepts connections, gives every request its `X-MEN-RequestID`,
//! runs the warp routes, and drains in-flight requests on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

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

/// Turn a warp response into ours.
pub fn from_warp(response: warp::reply::Response) -> HttpResponse {
    response.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting and wait for
/// the requests in flight to finish.
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: Request<Incoming>| handle(app.clone(), req));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    graceful.shutdown().await;
    tracing::info!("all connections closed");
}

/// Run one request through the app with its request id in scope, and put the id on the
/// response.
async fn handle(app: App, req: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let id = RequestId::from_headers(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = REQUEST_ID.scope(id.clone(), app(req)).await;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    crate::metrics::record_request(&method, &path, response.status(), started.elapsed());
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
