//! The PROXY protocol (HAProxy's, versions 1 and 2) that load balancers send before the
//! first byte of a connection to say whose it is.
//!
//! [`read_header`] reads exactly the header, never a byte of what follows: a protocol where
//! the server speaks first (a database behind a TCP listener) gets nothing from its client
//! until the server's greeting, so reading ahead would wait for ever.

use crate::model::ProxyProtocolVersion;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Relayed for this client, to this address.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer's own connection (v2 `LOCAL`, a health check) or an address family
    /// the protocol cannot name (v1 `UNKNOWN`): the TCP peer stays the client.
    Local,
}

/// Why a connection's first bytes are not a PROXY header sluice accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The connection does not start with either version's signature.
    Missing,
    /// A v1 line longer than the protocol's 107 bytes.
    TooLong,
    /// The header is there but does not parse; the text says where.
    Invalid(String),
    /// The client closed or the read failed before the header ended.
    Read(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no PROXY protocol header"),
            Self::TooLong => f.write_str("PROXY protocol v1 line longer than 107 bytes"),
            Self::Invalid(why) => write!(f, "invalid PROXY protocol header: {why}"),
            Self::Read(why) => write!(f, "reading the PROXY protocol header: {why}"),
        }
    }
}

/// Version 2's 12-byte signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's line, CRLF included, is at most this long (the specification's figure).
const V1_MAX_LINE: usize = 107;
/// Both versions are told apart by their first 6 bytes, and no header is shorter.
const PREFIX_LEN: usize = 6;

/// Reads one PROXY header, v1 or v2, from the start of `stream`.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Header, HeaderError> {
    let mut prefix = [0u8; PREFIX_LEN];
    read_exact(stream, &mut prefix).await?;
    if &prefix == b"PROXY " {
        let mut line = prefix.to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() == V1_MAX_LINE {
                return Err(HeaderError::TooLong);
            }
            let mut byte = [0u8; 1];
            read_exact(stream, &mut byte).await?;
            line.push(byte[0]);
        }
        parse_v1(&line)
    } else if prefix == V2_SIGNATURE[..PREFIX_LEN] {
        let mut fixed = [0u8; 16];
        fixed[..PREFIX_LEN].copy_from_slice(&prefix);
        read_exact(stream, &mut fixed[PREFIX_LEN..]).await?;
        let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        let mut body = vec![0u8; length];
        read_exact(stream, &mut body).await?;
        parse_v2(&fixed, &body)
    } else {
        Err(HeaderError::Missing)
    }
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), HeaderError> {
    stream
        .read_exact(buf)
        .await
        .map(drop)
        .map_err(|e| HeaderError::Read(e.to_string()))
}

/// Parses a whole v1 line, `PROXY TCP4 src dst sport dport\r\n` or `PROXY UNKNOWN…\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Header, HeaderError> {
    let text = line
        .strip_suffix(b"\r\n")
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or_else(|| HeaderError::Invalid("v1 line is not ASCII ending in CRLF".into()))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Header::Local),
        ["PROXY", family @ ("TCP4" | "TCP6"), source, destination, source_port, destination_port] =>
        {
            let ip = |text: &str| -> Result<IpAddr, HeaderError> {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| HeaderError::Invalid(format!("v1 address {text:?}")))?;
                if ip.is_ipv4() != (*family == "TCP4") {
                    return Err(HeaderError::Invalid(format!(
                        "v1 address {text} is not of family {family}"
                    )));
                }
                Ok(ip)
            };
            let port = |text: &str| -> Result<u16, HeaderError> {
                // The specification forbids leading zeros and signs; `parse` would take "+80".
                if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HeaderError::Invalid(format!("v1 port {text:?}")));
                }
                text.parse()
                    .map_err(|_| HeaderError::Invalid(format!("v1 port {text:?}")))
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(source)?, port(source_port)?),
                destination: SocketAddr::new(ip(destination)?, port(destination_port)?),
            })
        }
        _ => Err(HeaderError::Invalid(format!("v1 line {text:?}"))),
    }
}

/// Parses a v2 header: its 16 fixed bytes and the `body` they announce. TLVs after the
/// addresses are skipped.
pub fn parse_v2(fixed: &[u8; 16], body: &[u8]) -> Result<Header, HeaderError> {
    if fixed[..12] != V2_SIGNATURE {
        return Err(HeaderError::Missing);
    }
    let version = fixed[12] >> 4;
    let command = fixed[12] & 0x0f;
    if version != 2 {
        return Err(HeaderError::Invalid(format!("v2 version nibble {version}")));
    }
    match command {
        0 => return Ok(Header::Local),
        1 => {}
        other => return Err(HeaderError::Invalid(format!("v2 command {other}"))),
    }
    let short = || HeaderError::Invalid(format!("v2 body of {} bytes", body.len()));
    // High nibble: address family; low nibble: transport (1 stream, 2 datagram).
    match fixed[13] {
        0x11 | 0x12 => {
            let a: &[u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0).into(), u16::from_be_bytes([a[8], a[9]])),
                destination: SocketAddr::new(ip(4).into(), u16::from_be_bytes([a[10], a[11]])),
            })
        }
        0x21 | 0x22 => {
            let a: &[u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0).into(), u16::from_be_bytes([a[32], a[33]])),
                destination: SocketAddr::new(ip(16).into(), u16::from_be_bytes([a[34], a[35]])),
            })
        }
        // UNSPEC or Unix sockets: no IP address to take.
        _ => Ok(Header::Local),
    }
}

/// The header that tells an upstream whose connection it is (HAProxy's `send-proxy` and
/// `send-proxy-v2`): `source` is the client, `destination` the address it connected to.
/// IPv4-mapped addresses are sent as IPv4; when the two are of different families (an
/// IPv4 client on an IPv6 socket), both go as IPv6. An unknown client is sent as v1
/// `UNKNOWN` or v2 `LOCAL` (the upstream then takes the TCP peer as the client).
pub fn encode(version: ProxyProtocolVersion, header: Header) -> Vec<u8> {
    let addresses = match header {
        Header::Proxied {
            source,
            destination,
        } => {
            let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
            let (source, destination) = (canonical(source), canonical(destination));
            if source.is_ipv4() == destination.is_ipv4() {
                Some((source, destination))
            } else {
                let v6 = |a: SocketAddr| SocketAddr::new(IpAddr::V6(ipv6(a.ip())), a.port());
                Some((v6(source), v6(destination)))
            }
        }
        Header::Local => None,
    };
    match version {
        ProxyProtocolVersion::V1 => match addresses {
            Some((source, destination)) => format!(
                "PROXY {} {} {} {} {}\r\n",
                if source.is_ipv4() { "TCP4" } else { "TCP6" },
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes(),
            None => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        ProxyProtocolVersion::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            let Some((source, destination)) = addresses else {
                // Version 2, LOCAL; family UNSPEC; no body.
                out.extend_from_slice(&[0x20, 0x00, 0, 0]);
                return out;
            };
            let (family, mut body) = match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => (0x11, [s.octets(), d.octets()].concat()),
                (s, d) => (0x21, [ipv6(s).octets(), ipv6(d).octets()].concat()),
            };
            body.extend_from_slice(&source.port().to_be_bytes());
            body.extend_from_slice(&destination.port().to_be_bytes());
            // Version 2, PROXY; the family over a stream.
            out.extend_from_slice(&[0x21, family]);
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            out.extend_from_slice(&body);
            out
        }
    }
}

fn ipv6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn encoded_headers_read_back() {
        let v4 = Header::Proxied {
            source: "192.0.2.7:51000".parse().unwrap(),
            destination: "10.0.0.1:443".parse().unwrap(),
        };
        let v6 = Header::Proxied {
            source: "[2001:db8::7]:51000".parse().unwrap(),
            destination: "[2001:db8::1]:443".parse().unwrap(),
        };
        for version in [ProxyProtocolVersion::V1, ProxyProtocolVersion::V2] {
            for header in [v4, v6, Header::Local] {
                let bytes = encode(version, header);
                let (read, rest) = read(&[bytes.as_slice(), b"after"].concat()).await;
                assert_eq!(read, Ok(header), "{version:?} {header:?}");
                assert_eq!(rest, b"after");
            }
        }
        assert_eq!(
            encode(ProxyProtocolVersion::V1, v4),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n"
        );
        // The layout of the specification, byte for byte (section 2.2).
        let mut v2_v4 = V2_SIGNATURE.to_vec();
        v2_v4.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1]);
        v2_v4.extend_from_slice(&[0xc7, 0x38, 0x01, 0xbb]);
        assert_eq!(encode(ProxyProtocolVersion::V2, v4), v2_v4);
        let mut v2_local = V2_SIGNATURE.to_vec();
        v2_local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(encode(ProxyProtocolVersion::V2, Header::Local), v2_local);
        let v6_header = encode(ProxyProtocolVersion::V2, v6);
        assert_eq!(v6_header[12..16], [0x21, 0x21, 0, 36]);
        assert_eq!(v6_header.len(), 16 + 36);
    }

    #[test]
    fn mapped_and_mixed_addresses_keep_the_client() {
        let mapped = Header::Proxied {
            source: "[::ffff:192.0.2.7]:51000".parse().unwrap(),
            destination: "[::ffff:10.0.0.1]:443".parse().unwrap(),
        };
        assert_eq!(
            encode(ProxyProtocolVersion::V1, mapped),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n"
        );
        let mixed = Header::Proxied {
            source: "192.0.2.7:51000".parse().unwrap(),
            destination: "[2001:db8::1]:443".parse().unwrap(),
        };
        assert_eq!(
            encode(ProxyProtocolVersion::V1, mixed),
            b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 51000 443\r\n"
        );
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        header.extend_from_slice(body);
        header
    }

    async fn read(bytes: &[u8]) -> (Result<Header, HeaderError>, Vec<u8>) {
        let mut stream = bytes;
        let header = read_header(&mut stream).await;
        (header, stream.to_vec())
    }

    #[tokio::test]
    async fn v1_tcp4_and_tcp6_leave_what_follows_unread() {
        let (header, rest) = read(b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 80\r\nGET /").await;
        assert_eq!(
            header,
            Ok(Header::Proxied {
                source: "192.0.2.1:5555".parse().unwrap(),
                destination: "198.51.100.2:80".parse().unwrap(),
            })
        );
        assert_eq!(rest, b"GET /");
        let (header, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 443\r\n").await;
        assert_eq!(
            header,
            Ok(Header::Proxied {
                source: "[2001:db8::1]:1".parse().unwrap(),
                destination: "[2001:db8::2]:443".parse().unwrap(),
            })
        );
        let (header, rest) = read(b"PROXY UNKNOWN\r\nx").await;
        assert_eq!((header, rest), (Ok(Header::Local), b"x".to_vec()));
    }

    #[tokio::test]
    async fn v1_errors_are_named() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 5555\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 2\r\n",
            b"PROXY TCP5 a b 1 2\r\n",
        ] {
            assert!(
                matches!(read(bad).await.0, Err(HeaderError::Invalid(_))),
                "{bad:?}"
            );
        }
        let endless = [b"PROXY ".to_vec(), vec![b'1'; 200]].concat();
        assert_eq!(read(&endless).await.0, Err(HeaderError::TooLong));
        assert_eq!(
            read(b"GET / HTTP/1.1\r\n").await.0,
            Err(HeaderError::Missing)
        );
        assert!(matches!(
            read(b"PROXY TCP4").await.0,
            Err(HeaderError::Read(_))
        ));
    }

    #[tokio::test]
    async fn v2_inet_inet6_local_and_tlvs() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&5555u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let mut bytes = v2(1, 0x11, &body);
        bytes.extend_from_slice(b"next");
        let (header, rest) = read(&bytes).await;
        assert_eq!(
            header,
            Ok(Header::Proxied {
                source: "192.0.2.1:5555".parse().unwrap(),
                destination: "198.51.100.2:443".parse().unwrap(),
            })
        );
        assert_eq!(rest, b"next");

        let source: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let mut body = source.octets().to_vec();
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0, 9, 0, 80]);
        assert_eq!(
            read(&v2(1, 0x21, &body)).await.0,
            Ok(Header::Proxied {
                source: "[2001:db8::7]:9".parse().unwrap(),
                destination: "[::1]:80".parse().unwrap(),
            })
        );
        assert_eq!(read(&v2(0, 0x00, &[])).await.0, Ok(Header::Local));
        assert_eq!(read(&v2(1, 0x31, &[0; 216])).await.0, Ok(Header::Local));
    }

    #[tokio::test]
    async fn v2_errors_are_named() {
        assert!(matches!(
            read(&v2(1, 0x11, &[1, 2, 3])).await.0,
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            read(&v2(7, 0x11, &[0; 12])).await.0,
            Err(HeaderError::Invalid(_))
        ));
        let mut truncated = v2(1, 0x11, &[0; 12]);
        truncated.truncate(20);
        assert!(matches!(
            read(&truncated).await.0,
            Err(HeaderError::Read(_))
        ));
    }
}
