//! The server name (SNI) of a TLS ClientHello, read from the bytes a client sends before
//! any TLS is negotiated, so that a connection can be routed by name and relayed
//! untouched (TLS passthrough).
//!
//! [`server_name`] looks at a prefix of the connection: it says whether more bytes are
//! needed, or what the hello names. The ClientHello may span several TLS records and TCP
//! segments (post-quantum key shares make it over 1 KiB); it is reassembled from the
//! handshake records, at most 16 of them. Nothing here allocates beyond the reassembled
//! message.

use std::fmt;

/// The largest ClientHello message read (nginx's `ssl_preread` reads within 16 KiB too).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The most records a ClientHello may be split into (real clients use one or two); it
/// bounds the work a client sending tiny records can cause.
const MAX_RECORDS: usize = 16;

/// The largest plaintext record (RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// What a prefix of a connection says about its ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// The prefix ends before the ClientHello does; nothing more can be said before the
    /// prefix is this long (the end of the record under way).
    NeedMore(usize),
    /// A complete ClientHello; its server name, lower-case, without a trailing dot, if it
    /// sends one.
    Hello(Option<String>),
    /// The connection does not start with a TLS ClientHello sluice can read.
    NotTls(NotTls),
}

/// Why bytes are not a readable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotTls {
    /// The first record is not a handshake record.
    NotHandshake,
    /// The first handshake message is not a ClientHello.
    NotClientHello,
    /// Longer than [`MAX_CLIENT_HELLO`].
    TooLong,
    /// A length or field that does not fit; the text says which.
    Malformed(&'static str),
}

impl fmt::Display for NotTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotTls::NotHandshake => f.write_str("the first record is not a TLS handshake"),
            NotTls::NotClientHello => f.write_str("the first handshake is not a ClientHello"),
            NotTls::TooLong => write!(f, "the ClientHello is over {MAX_CLIENT_HELLO} bytes"),
            NotTls::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
        }
    }
}

/// Reads the ClientHello at the start of `prefix` (all bytes received so far).
pub fn server_name(prefix: &[u8]) -> Peek {
    match client_hello(prefix) {
        Ok(Ok(hello)) => match hello_server_name(&hello) {
            Ok(name) => Peek::Hello(name),
            Err(e) => Peek::NotTls(e),
        },
        Ok(Err(needed)) => Peek::NeedMore(needed),
        Err(e) => Peek::NotTls(e),
    }
}

/// The ClientHello message body reassembled from the handshake records of `prefix`, or
/// the prefix length needed before it can progress.
fn client_hello(prefix: &[u8]) -> Result<Result<Vec<u8>, usize>, NotTls> {
    match prefix.first() {
        None => return Ok(Err(1)),
        // Known from the first byte: a client of another protocol is not kept waiting.
        Some(&first) if first != RECORD_HANDSHAKE => return Err(NotTls::NotHandshake),
        Some(_) => {}
    }
    let mut message = Vec::new();
    let mut offset = 0;
    for _ in 0..MAX_RECORDS {
        let Some(header) = prefix.get(offset..offset + 5) else {
            return Ok(Err(offset + 5));
        };
        if header[0] != RECORD_HANDSHAKE {
            return Err(NotTls::Malformed(
                "a record other than handshake inside the ClientHello",
            ));
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 {
            return Err(NotTls::Malformed("an empty handshake record"));
        }
        if length > MAX_RECORD {
            return Err(NotTls::Malformed("a record over 16 KiB"));
        }
        let end = offset + 5 + length;
        let Some(fragment) = prefix.get(offset + 5..end) else {
            // A partial first record still tells the message type and size.
            if message.is_empty() {
                message_size(&prefix[offset + 5..])?;
            }
            return Ok(Err(end));
        };
        message.extend_from_slice(fragment);
        offset = end;
        if let Some(size) = message_size(&message)? {
            if message.len() >= size + 4 {
                message.truncate(size + 4);
                message.drain(..4);
                return Ok(Ok(message));
            }
        }
    }
    Err(NotTls::Malformed(
        "a ClientHello split into over 16 records",
    ))
}

/// The size of the ClientHello starting `message`, once its 4-byte header is there.
fn message_size(message: &[u8]) -> Result<Option<usize>, NotTls> {
    match message.first() {
        Some(&HANDSHAKE_CLIENT_HELLO) | None => {}
        Some(_) => return Err(NotTls::NotClientHello),
    }
    let Some(size) = message.get(1..4) else {
        return Ok(None);
    };
    let size = (usize::from(size[0]) << 16) | (usize::from(size[1]) << 8) | usize::from(size[2]);
    if size > MAX_CLIENT_HELLO {
        return Err(NotTls::TooLong);
    }
    Ok(Some(size))
}

/// Big-endian reads over a message that fail with the name of the field.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], NotTls> {
        if self.0.len() < n {
            return Err(NotTls::Malformed(field));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, NotTls> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, NotTls> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A field prefixed by its one-byte length.
    fn vec8(&mut self, field: &'static str) -> Result<&'a [u8], NotTls> {
        let n = self.u8(field)?;
        self.take(usize::from(n), field)
    }

    /// A field prefixed by its two-byte length.
    fn vec16(&mut self, field: &'static str) -> Result<&'a [u8], NotTls> {
        let n = self.u16(field)?;
        self.take(usize::from(n), field)
    }
}

/// The host name of the server_name extension of a ClientHello body (RFC 8446 §4.1.2,
/// RFC 6066 §3).
fn hello_server_name(body: &[u8]) -> Result<Option<String>, NotTls> {
    let mut r = Reader(body);
    r.take(2 + 32, "version and random")?;
    r.vec8("session id")?;
    r.vec16("cipher suites")?;
    r.vec8("compression methods")?;
    if r.0.is_empty() {
        // A hello without extensions (SSL 3.0 style) names no server.
        return Ok(None);
    }
    let mut extensions = Reader(r.vec16("extensions")?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec16("extension data")?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut names = Reader(Reader(data).vec16("server name list")?);
        while !names.0.is_empty() {
            let name_type = names.u8("server name type")?;
            let name = names.vec16("server name")?;
            if name_type != NAME_TYPE_HOST {
                continue;
            }
            let valid = !name.is_empty()
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
            if !valid {
                return Err(NotTls::Malformed("server name is not a DNS name"));
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            return Ok(Some(name.trim_end_matches('.').to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::sync::Arc;

    /// The first flight of a real rustls client to `name`.
    fn rustls_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = ServerName::try_from(name.to_string()).expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), server).expect("client connection");
        let mut out = Vec::new();
        client.write_tls(&mut out).expect("write hello");
        out
    }

    #[test]
    fn reads_the_name_of_a_real_client_hello() {
        let hello = rustls_hello("Shop.Example.com");
        assert_eq!(
            server_name(&hello),
            Peek::Hello(Some("shop.example.com".into()))
        );
    }

    #[test]
    fn every_shorter_prefix_needs_more() {
        let hello = rustls_hello("db.example.com");
        for end in 0..hello.len() {
            let Peek::NeedMore(needed) = server_name(&hello[..end]) else {
                panic!("prefix {end}: {:?}", server_name(&hello[..end]));
            };
            assert!(
                needed > end && needed <= hello.len(),
                "prefix {end}: {needed}"
            );
        }
    }

    #[test]
    fn bytes_after_the_hello_are_not_part_of_it() {
        let mut flight = rustls_hello("db.example.com");
        flight.extend_from_slice(&[23, 3, 3, 0, 2, 0xde, 0xad]);
        assert_eq!(
            server_name(&flight),
            Peek::Hello(Some("db.example.com".into()))
        );
    }

    #[test]
    fn an_ip_address_sends_no_name() {
        let hello = rustls_hello("127.0.0.1");
        assert_eq!(server_name(&hello), Peek::Hello(None));
    }

    /// `hello`'s handshake message in records of the given sizes.
    fn records(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut body = &hello[5..];
        let mut out = Vec::new();
        for &size in sizes {
            let (fragment, rest) = body.split_at(size.min(body.len()));
            out.extend_from_slice(&[RECORD_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            out.extend_from_slice(fragment);
            body = rest;
        }
        out
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let hello = rustls_hello("split.example.com");
        let rest = hello.len() - 5;
        // Split inside the body, and inside the 4-byte handshake header.
        for sizes in [
            vec![40, rest - 40],
            vec![2, rest - 2],
            vec![2, 1, 1, rest - 4],
        ] {
            let split = records(&hello, &sizes);
            let first = 5 + sizes[0];
            let needed = if first > 10 { first } else { first + 5 };
            assert_eq!(server_name(&split[..10]), Peek::NeedMore(needed));
            assert_eq!(
                server_name(&split),
                Peek::Hello(Some("split.example.com".into())),
                "{sizes:?}"
            );
        }
        let tiny = records(&hello, &[1; 17]);
        assert_eq!(
            server_name(&tiny),
            Peek::NotTls(NotTls::Malformed(
                "a ClientHello split into over 16 records"
            ))
        );
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(
            server_name(b"GET / HTTP/1.1\r\n"),
            Peek::NotTls(NotTls::NotHandshake)
        );
        // Known from the first byte: a short greeting is not kept waiting for more.
        assert_eq!(server_name(b"PING"), Peek::NotTls(NotTls::NotHandshake));
        assert_eq!(server_name(b""), Peek::NeedMore(1));
        assert_eq!(
            server_name(&[22, 3, 1, 0, 0]),
            Peek::NotTls(NotTls::Malformed("an empty handshake record"))
        );
        // A handshake record holding a ServerHello.
        assert_eq!(
            server_name(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
            Peek::NotTls(NotTls::NotClientHello)
        );
    }

    #[test]
    fn lengths_that_do_not_fit_are_malformed() {
        let mut hello = rustls_hello("a.example.com");
        // Shorten the message so that the extensions' length overruns it.
        let cut = hello.len() - 10;
        hello.truncate(cut);
        let body_len = (cut - 9) as u32;
        hello[6..9].copy_from_slice(&body_len.to_be_bytes()[1..]);
        hello[3..5].copy_from_slice(&((cut - 5) as u16).to_be_bytes());
        assert!(matches!(
            server_name(&hello),
            Peek::NotTls(NotTls::Malformed(_))
        ));
    }

    #[test]
    fn an_endless_hello_is_refused() {
        let mut huge = vec![RECORD_HANDSHAKE, 3, 1, 0x40, 0];
        huge.extend_from_slice(&[HANDSHAKE_CLIENT_HELLO, 0, 0x40, 1]);
        assert_eq!(server_name(&huge), Peek::NotTls(NotTls::TooLong));
        let oversized_record = [RECORD_HANDSHAKE, 3, 1, 0x40, 1, HANDSHAKE_CLIENT_HELLO];
        assert!(matches!(
            server_name(&oversized_record),
            Peek::NotTls(NotTls::Malformed(_))
        ));
    }
}
