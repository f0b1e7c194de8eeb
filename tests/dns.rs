//! Upstreams by DNS name through the real binary (issue #17), against a DNS server started
//! by the test whose answer changes: the endpoints follow the name within its TTL, and a
//! failing server leaves the last good set serving.

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use support::*;

/// What the test DNS server answers to A queries.
#[derive(Clone)]
enum Answer {
    /// These addresses, with this TTL in seconds.
    Addresses(Vec<Ipv4Addr>, u32),
    /// SERVFAIL.
    Failure,
}

/// A DNS server on UDP 127.0.0.1: A queries get [`Answer`], other types an empty answer.
struct DnsServer {
    address: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    queries: Arc<AtomicUsize>,
}

impl DnsServer {
    fn start(answer: Answer) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS server");
        let address = socket.local_addr().expect("address");
        let answer = Arc::new(Mutex::new(answer));
        let queries = Arc::new(AtomicUsize::new(0));
        let (current, count) = (answer.clone(), queries.clone());
        thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buffer) {
                count.fetch_add(1, Ordering::Relaxed);
                let answer = current.lock().unwrap().clone();
                if let Some(reply) = reply(&buffer[..n], &answer) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self {
            address,
            answer,
            queries,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// The reply to one query (RFC 1035 §4.1): its question echoed, then the answers.
fn reply(query: &[u8], answer: &Answer) -> Option<Vec<u8>> {
    // The question's name: labels up to a zero byte, then type and class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let mut reply = query.get(..question_end)?.to_vec();
    // QR, opcode 0, RD copied, RA; RCODE 0 or 2 (SERVFAIL).
    reply[2] = 0x80 | (query[2] & 0x01);
    reply[3] = 0x80;
    reply[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    match answer {
        Answer::Failure => reply[3] |= 2,
        Answer::Addresses(addresses, ttl) if qtype == 1 => {
            reply[7] = u8::try_from(addresses.len()).ok()?;
            for address in addresses {
                // A pointer to the question's name, type A, class IN, TTL, 4 bytes.
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
                reply.extend_from_slice(&ttl.to_be_bytes());
                reply.extend_from_slice(&[0, 4]);
                reply.extend_from_slice(&address.octets());
            }
        }
        Answer::Addresses(..) => {}
    }
    Some(reply)
}

#[test]
fn dns_upstream_follows_its_name_and_keeps_the_last_answer_on_failure() {
    let port = free_port();
    let first = Backend::start_on(
        "first",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    let second = Backend::start_on(
        "second",
        Behavior::Echo,
        SocketAddr::from(([127, 0, 0, 2], port)),
    );
    let dns = DnsServer::start(Answer::Addresses(vec![Ipv4Addr::new(127, 0, 0, 1)], 1));
    let listen = listen_address();
    let sluice = Sluice::start_with_server(
        &format!(
            "listeners: [{{ name: web, listen: \"{listen}\" }}]\n\
             routes: [{{ name: api, listener: web, upstream: partner }}]\n\
             upstreams:\n\
             \x20 - {{ name: partner, dns: {{ name: api.partner.test, port: {port}, min_ttl: 100ms, max_ttl: 1s }} }}\n"
        ),
        &format!("resolver: {{ nameservers: [\"{}\"] }}", dns.address),
    );
    // Ready once the name has resolved.
    assert_eq!(get(listen, "/").backend(), "first");

    // The answer changes: within the TTL, requests go to the new address.
    dns.set(Answer::Addresses(vec![Ipv4Addr::new(127, 0, 0, 2)], 1));
    wait_until("requests to the new address", READY_TIMEOUT, || {
        get(listen, "/").backend() == "second"
    });
    sluice.wait_metric(
        "sluice_upstream_endpoints{state=\"healthy\",upstream=\"partner\"}",
        1.0,
    );

    // The server fails: the last good address keeps serving, and the failure is counted.
    dns.set(Answer::Failure);
    let queries = dns.queries.load(Ordering::Relaxed);
    wait_until("a failed resolution", READY_TIMEOUT, || {
        sluice.metric("sluice_discovery_errors_total{upstream=\"partner\"}") >= 1.0
    });
    assert!(dns.queries.load(Ordering::Relaxed) > queries);
    for _ in 0..5 {
        assert_eq!(get(listen, "/").backend(), "second");
    }
    assert!(sluice
        .stderr()
        .contains("resolving api.partner.test failed, keeping the last addresses"));

    // Both addresses: both serve.
    dns.set(Answer::Addresses(
        vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
        1,
    ));
    sluice.wait_metric(
        "sluice_upstream_endpoints{state=\"healthy\",upstream=\"partner\"}",
        2.0,
    );
    let before = (first.requests().len(), second.requests().len());
    for _ in 0..20 {
        assert_eq!(get(listen, "/").status, 200);
    }
    assert!(first.requests().len() > before.0 && second.requests().len() > before.1);
}
