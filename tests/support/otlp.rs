//! A fake OpenTelemetry collector: a real HTTP/1.1 server on 127.0.0.1 that takes OTLP/HTTP
//! protobuf exports (`POST /v1/traces`), decodes them with the OpenTelemetry project's own
//! message types and keeps every span; or one that reads exports and never answers.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Spans and the service names they came with.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    service_names: Vec<String>,
    exports: usize,
}

pub struct Collector {
    pub address: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    /// A collector that answers every export 200.
    pub fn start() -> Self {
        Self::serve(true)
    }

    /// A collector that reads exports and never answers them (a hung process).
    pub fn hanging() -> Self {
        Self::serve(false)
    }

    fn serve(answers: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        let address = listener.local_addr().expect("collector address");
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = received.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                thread::spawn(move || serve_connection(stream, &shared, answers));
            }
        });
        Self { address, received }
    }

    /// The URL sluice's `tracing.otlp_endpoint` names.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    /// The `service.name` of every export received.
    pub fn service_names(&self) -> Vec<String> {
        self.lock().service_names.clone()
    }

    /// Exports received (answered or not).
    pub fn exports(&self) -> usize {
        self.lock().exports
    }

    /// The spans of trace `trace_id` (hex), once there are `count` of them.
    pub fn wait_trace(&self, trace_id: &str, count: usize) -> Vec<Span> {
        let mut found = Vec::new();
        super::wait_until(
            &format!("{count} spans of trace {trace_id}"),
            Duration::from_secs(20),
            || {
                found = self
                    .spans()
                    .into_iter()
                    .filter(|s| hex(&s.trace_id) == trace_id)
                    .collect();
                found.len() >= count
            },
        );
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Lower-case hex of `bytes` (ids as `traceparent` writes them).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of attribute `key` of `span`, as text (numbers and booleans formatted).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|a| a.key == key)?;
    Some(match value.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(n) => n.to_string(),
        Value::DoubleValue(x) => x.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn serve_connection(stream: TcpStream, received: &Mutex<Received>, answers: bool) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let export = ExportTraceServiceRequest::decode(body.as_slice())
            .expect("an OTLP ExportTraceServiceRequest");
        {
            let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
            received.exports += 1;
            for resource in export.resource_spans {
                let name = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                received.service_names.push(name);
                for scope in resource.scope_spans {
                    received.spans.extend(scope.spans);
                }
            }
        }
        if !answers {
            // Keeps the connection open, unanswered, until the peer goes.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            return;
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
