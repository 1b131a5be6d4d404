//! The local HTTP server: serves every route on one port for development
//! (`rollback-guard serve`) and for integration tests (bound to port 0).
//! Production traffic goes through [`crate::runtime::vercel`] instead.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::runtime::app::App;

/// Serves `app` on `listener` until `shutdown` resolves, then waits for
/// in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let app = Arc::clone(&app);
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let app = Arc::clone(&app);
                    async move {
                        let res = crate::web::handle_incoming(&app, req).await;
                        Ok::<_, Infallible>(res.map(Full::new))
                    }
                });
                // HTTP/1.1 only: browsers, senders and Vercel's proxy speak
                // it to a local server, and the protocol sniffing of an
                // HTTP/1-or-2 connection cost every request.
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
