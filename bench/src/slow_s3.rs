//! An S3 endpoint with S3's round trip: s3s's protocol over s3s-fs's files (what `modelctl dev`
//! serves), every request answered `latency` late. AWS's S3 performance guide puts the median
//! latency of small requests "in the tens of milliseconds"; loopback has none, and moto_server
//! spends its milliseconds on Python's CPU, which overlapping requests cannot hide.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s_fs::FileSystem;
use tokio::net::TcpListener;

/// The credentials `modelpipe_tests::aws_config` signs with.
const KEY: &str = "testing";

#[derive(Clone)]
struct Late {
    service: S3Service,
    latency: Duration,
}

impl hyper::service::Service<http::Request<Incoming>> for Late {
    type Response = <S3Service as hyper::service::Service<http::Request<Incoming>>>::Response;
    type Error = <S3Service as hyper::service::Service<http::Request<Incoming>>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let Late { service, latency } = self.clone();
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            hyper::service::Service::call(&service, request).await
        })
    }
}

/// Serves the buckets under `root` (each a directory) on loopback until the runtime ends;
/// returns the endpoint URL.
pub async fn start(root: &Path, latency: Duration) -> String {
    let fs = FileSystem::new(root).expect("an s3s-fs root");
    let service = {
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(KEY, KEY));
        builder.build()
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let late = Late { service, latency };
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            // As S3 answers: no Nagle delay between a response's header and body writes.
            socket.set_nodelay(true).unwrap();
            let connection = http
                .serve_connection(TokioIo::new(socket), late.clone())
                .into_owned();
            tokio::spawn(connection);
        }
    });
    endpoint
}
