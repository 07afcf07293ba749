//! `--proxy`: what the load generator sends first, as a plain `TcpListener` receives it. (A run
//! against a server listener that expects the header belongs in `modes.rs` once `smtpsd` can
//! be configured for one.)

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use smtps_proxy::{Command as ProxyCommand, Status, Version, parse_header};

fn loadgen(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smtps-loadgen"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, stdout)
}

fn accept(listener: &TcpListener) -> TcpStream {
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Implicit TLS with a v2 header: every connection starts with a complete header naming the
/// next fake client and the listener, and the TLS ClientHello follows it directly.
#[test]
fn v2_header_then_client_hello() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut received = Vec::new();
        for _ in 0..3 {
            let mut stream = accept(&listener);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "closed after {buf:?}");
                buf.extend_from_slice(&chunk[..n]);
                match parse_header(&buf).unwrap() {
                    Status::Complete((len, _)) if buf.len() >= len + 5 => break,
                    _ => {}
                }
            }
            received.push(buf);
            // Dropped: the load generator sees the close and starts the next session.
        }
        received
    });
    let target_s = target.to_string();
    let (_, stdout) = loadgen(&[
        "sessions",
        "--target",
        &target_s,
        "--insecure",
        "--proxy",
        "v2",
        "--workers",
        "1",
        "--count",
        "3",
        "--timeout",
        "5",
    ]);
    assert!(
        stdout.contains(" proxy=v2 ") && stdout.contains(" proxy_source=192.0.2.0/24 "),
        "{stdout}"
    );
    assert!(stdout.contains(" sessions=0 "), "{stdout}");
    let received = server.join().unwrap();
    for (i, buf) in received.iter().enumerate() {
        let Ok(Status::Complete((len, header))) = parse_header(buf) else {
            panic!("no header: {buf:?}");
        };
        assert_eq!(header.version, Version::V2);
        assert_eq!(header.command, ProxyCommand::Proxy);
        let addresses = header.addresses.unwrap();
        let client: SocketAddr = format!("192.0.2.{}:1024", i + 1).parse().unwrap();
        assert_eq!(addresses.source, client);
        assert_eq!(addresses.destination, target);
        // A TLS handshake record (the ClientHello) right after the header.
        assert_eq!(&buf[len..len + 2], b"\x16\x03", "{buf:?}");
    }
}

/// Plain SMTP with a v1 header: the header alone, and nothing more before the banner.
#[test]
fn v1_header_then_the_banner() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut stream = accept(&listener);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while !buf.ends_with(b"\r\n") {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed after {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
        // The client waits for the banner: nothing else comes.
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(stream.read(&mut chunk).is_err(), "more before the banner");
        stream.write_all(b"554 5.7.1 no service\r\n").unwrap();
        buf
    });
    let target_s = target.to_string();
    let (_, stdout) = loadgen(&[
        "sessions",
        "--target",
        &target_s,
        "--tls",
        "none",
        "--proxy",
        "v1",
        "--proxy-source",
        "198.51.100.0/24",
        "--workers",
        "1",
        "--count",
        "1",
        "--timeout",
        "5",
    ]);
    assert!(
        stdout.contains(" proxy=v1 ") && stdout.contains(" errors=banner:1 "),
        "{stdout}"
    );
    let received = server.join().unwrap();
    assert_eq!(
        received,
        format!(
            "PROXY TCP4 198.51.100.1 127.0.0.1 1024 {}\r\n",
            target.port()
        )
        .as_bytes()
    );
}
