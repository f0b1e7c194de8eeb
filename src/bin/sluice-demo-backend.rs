//! A tiny HTTP/1.1 backend for trying sluice out (`make run` starts two of them).
//!
//! Usage: `sluice-demo-backend 127.0.0.1:8081 NAME`. Every request gets a one-line plain-text
//! answer naming the backend, the method, the target and the attempt header sluice adds.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let name = args.next().unwrap_or_else(|| "demo".into());
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))?;
    println!("demo backend {name} listening on {address}");
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &name).await {
                eprintln!("demo backend {name}: connection error: {e}");
            }
        });
    }
}

async fn serve(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut attempt = String::from("-");
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((key, value)) = line.split_once(':') {
                match key.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.trim().parse().unwrap_or(0),
                    "x-sluice-attempt" => attempt = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await?;
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("?"), parts.next().unwrap_or("?"));
        let text = format!("hello from {name}: {method} {target} (attempt {attempt})\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
    }
}
