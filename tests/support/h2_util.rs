//! HTTP/2 helpers shared by the h2c, TLS and gRPC tests.

use tokio::io::{AsyncRead, AsyncWrite};

/// Reads an HTTP/2 body to its end, releasing flow-control capacity as it goes.
pub async fn read_body(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// Serves one HTTP/2 connection like a gRPC server: every request gets 200,
/// `content-type: application/grpc`, the body `reply(path)` and `grpc-status: 0` in trailers.
pub async fn serve_grpc_like<T, B>(io: T, reply: impl Fn(&str) -> B)
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: Into<bytes::Bytes>,
{
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        let body = reply(request.uri().path());
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .expect("response");
        let Ok(mut stream) = respond.send_response(response, false) else {
            continue;
        };
        let _ = stream.send_data(body.into(), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let _ = stream.send_trailers(trailers);
    }
}
