//! A small tonic gRPC service and client for the end-to-end gRPC tests.
//!
//! Messages are raw bytes (a codec that copies them), so no protobuf code generation is
//! needed; everything else (framing, HTTP/2, trailers, `grpc-timeout`) is tonic's own.
//! Service `test.Echo`:
//! - `Unary`: answers `echo: <message> (grpc-timeout: <header or none>)`;
//! - `Count`: server streaming; the message is a number N, answered with `item 1`..`item N`.

use bytes::{Buf, BufMut};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::server::{Grpc, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

/// Path of the unary method.
pub const UNARY: &str = "/test.Echo/Unary";
/// Path of the server-streaming method.
pub const COUNT: &str = "/test.Echo/Count";

/// Messages as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ItemStream = Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, Status>> + Send>>;

struct Unary;

impl UnaryService<Vec<u8>> for Unary {
    type Response = Vec<u8>;
    type Future = BoxFuture<Result<Response<Vec<u8>>, Status>>;

    fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let message = String::from_utf8_lossy(request.get_ref()).to_string();
        Box::pin(async move {
            Ok(Response::new(
                format!("echo: {message} (grpc-timeout: {deadline})").into_bytes(),
            ))
        })
    }
}

struct Count;

impl ServerStreamingService<Vec<u8>> for Count {
    type Response = Vec<u8>;
    type ResponseStream = ItemStream;
    type Future = BoxFuture<Result<Response<ItemStream>, Status>>;

    fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
        let count: Result<u32, _> = String::from_utf8_lossy(request.get_ref()).parse();
        Box::pin(async move {
            let count = count.map_err(|_| Status::invalid_argument("send a number"))?;
            let items = (1..=count).map(|i| Ok(format!("item {i}").into_bytes()));
            Ok(Response::new(
                Box::pin(futures::stream::iter(items)) as ItemStream
            ))
        })
    }
}

/// The `test.Echo` service as the tower service tonic's server runs.
#[derive(Clone)]
struct EchoService;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = Grpc::new(BytesCodec);
            Ok(match request.uri().path() {
                UNARY => grpc.unary(Unary, request).await,
                COUNT => grpc.server_streaming(Count, request).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A running tonic server of `test.Echo` on cleartext HTTP/2, counting its connections.
pub struct GrpcBackend {
    pub address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl GrpcBackend {
    /// Starts the server on its own thread and runtime.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind gRPC backend");
        let address = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("nonblocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let incoming = futures::stream::unfold(listener, move |listener| {
                    let counter = counter.clone();
                    async move {
                        let accepted = listener.accept().await.map(|(tcp, _)| tcp);
                        counter.fetch_add(1, Ordering::SeqCst);
                        Some((accepted, listener))
                    }
                });
                let served = tonic::transport::Server::builder()
                    .serve_with_incoming(EchoService, incoming)
                    .await;
                if let Err(e) = served {
                    eprintln!("gRPC backend stopped: {e}");
                }
            });
        });
        Self { address, accepted }
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A tonic client of `test.Echo` through `address` (cleartext HTTP/2).
pub async fn client(address: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect gRPC channel");
    tonic::client::Grpc::new(channel)
}

/// Calls `Unary` with `message`, and `grpc-timeout` when `timeout` is set.
pub async fn unary(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    message: &str,
    timeout: Option<std::time::Duration>,
) -> Result<String, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = Request::new(message.as_bytes().to_vec());
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let response = client
        .unary(
            request,
            http::uri::PathAndQuery::from_static(UNARY),
            BytesCodec,
        )
        .await?;
    Ok(String::from_utf8_lossy(response.get_ref()).to_string())
}

/// Calls `Count` for `n` items and collects them, with the trailers' metadata.
pub async fn count(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    n: u32,
) -> Result<(Vec<String>, tonic::metadata::MetadataMap), Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let response = client
        .server_streaming(
            Request::new(n.to_string().into_bytes()),
            http::uri::PathAndQuery::from_static(COUNT),
            BytesCodec,
        )
        .await?;
    let mut stream = response.into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await? {
        items.push(String::from_utf8_lossy(&item).to_string());
    }
    let trailers = stream.trailers().await?.unwrap_or_default();
    Ok((items, trailers))
}
