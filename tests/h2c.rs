//! Cleartext HTTP/2 downstream (`h2c: true`): prior-knowledge HTTP/2 and HTTP/1.1 on one port.

mod support;

use support::*;

/// GETs `paths` over one HTTP/2 connection to `web`; returns each status and body.
fn h2_get(web: std::net::SocketAddr, paths: &[&str]) -> Vec<(u16, Vec<u8>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
        let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut responses = Vec::new();
        for path in paths {
            let request = http::Request::builder()
                .method("GET")
                .uri(format!("http://h2c.test{path}"))
                .body(())
                .expect("request");
            let (response, _) = client.send_request(request, true).expect("send request");
            let response = response.await.expect("response");
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("body chunk");
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            responses.push((status, bytes));
        }
        responses
    })
}

#[test]
fn h2c_and_http1_share_one_port() {
    let backend = Backend::start("app", Behavior::Echo);
    let web = listen_address();
    let body = format!(
        "listeners: [{{ name: web, listen: \"{web}\", h2c: true }}]\n\
         routes: [{{ name: all, listener: web, upstream: app }}]\n\
         upstreams: [{{ name: app, endpoints: [\"{}\"] }}]\n",
        backend.address
    );
    let sluice = Sluice::start(&body);

    let responses = h2_get(web, &["/h2/1", "/h2/2", "/nowhere"]);
    for (status, body) in &responses[..2] {
        assert_eq!(*status, 200);
        let echoed: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
        assert_eq!(echoed["backend"], "app");
    }
    assert_eq!(get(web, "/h1").status, 200, "HTTP/1.1 on the same port");
    let log = sluice.wait_access_log(4);
    let h2_lines = log.iter().filter(|r| r["proto"] == "HTTP/2").count();
    assert_eq!(h2_lines, 3, "{log:?}");
    assert!(log.iter().any(|r| r["proto"] == "HTTP/1.1" && r["uri"] == "/h1"));
}
