//! A recording HTTP server for outbound contracts (Slack incoming webhooks,
//! Resend, Twilio): it stores every request and answers from a script, then
//! with a default reply.

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Recorder {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

/// Answers scripted `(status, body)` replies first, then `default`.
pub async fn start(script: Vec<(u16, &'static str)>, default: (u16, &'static str)) -> Recorder {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(script));
    let shared = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (requests, script) = (Arc::clone(&shared), Arc::clone(&script));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (requests, script) = (Arc::clone(&requests), Arc::clone(&script));
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let body = String::from_utf8_lossy(
                                &req.into_body().collect().await.unwrap().to_bytes(),
                            )
                            .into_owned();
                            requests.lock().unwrap().push(Recorded {
                                method,
                                path,
                                headers,
                                body,
                            });
                            let (status, body) = {
                                let mut s = script.lock().unwrap();
                                if s.is_empty() {
                                    default
                                } else {
                                    s.remove(0)
                                }
                            };
                            let res = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Recorder { url, requests }
}
