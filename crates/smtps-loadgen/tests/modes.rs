//! Each mode for about a second against an in-process `smtpsd --sink` on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use smtpsd::config::{self, Command as DaemonCommand};
use smtpsd::daemon::Daemon;

struct Server {
    addrs: Vec<std::net::SocketAddr>,
    handle: smtps_server::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown(Duration::ZERO);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start() -> Server {
    // One directory per server: the tests run in parallel in one process.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("smtps-loadgen-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let cert_path = dir.join("cert.pem").display().to_string();
    let key_path = dir.join("key.pem").display().to_string();
    let args = [
        "--sink",
        "--listen",
        "127.0.0.1:0=implicit-tls",
        "--listen",
        "127.0.0.2:0=starttls",
        "--listen",
        "127.0.0.3:0=plain",
        "--cert",
        &cert_path,
        "--key",
        &key_path,
        "--hostname",
        "mx.test",
        "--workers",
        "1",
        "--log-level",
        "off",
    ];
    let DaemonCommand::Run(options) = config::parse(args).unwrap() else {
        panic!("not a run command");
    };
    let daemon = Daemon::build(&options).unwrap();
    let addrs = daemon.local_addrs().to_vec();
    let handle = daemon.handle();
    let thread = std::thread::spawn(move || {
        let _ = daemon.run();
    });
    Server {
        addrs,
        handle,
        thread: Some(thread),
        dir,
    }
}

/// Runs the load generator and parses its summary line.
fn loadgen(args: &[&str]) -> HashMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_smtps-loadgen"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {stdout}");
    lines[0]
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn number(summary: &HashMap<String, String>, key: &str) -> f64 {
    let value = summary
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"));
    value
        .trim_end_matches("/s")
        .parse()
        .unwrap_or_else(|_| panic!("{key}={value} is not a number"))
}

#[test]
fn every_mode_against_smtpsd() {
    let server = start();
    let pid = std::process::id().to_string();
    let ca = server.dir.join("cert.pem").display().to_string();
    let implicit = server.addrs[0].to_string();
    let starttls = server.addrs[1].to_string();
    let plain = server.addrs[2].to_string();

    for (target, tls) in [
        (&implicit, "implicit"),
        (&starttls, "starttls"),
        (&plain, "none"),
    ] {
        let s = loadgen(&[
            "sessions",
            "--target",
            target,
            "--tls",
            tls,
            "--ca",
            &ca,
            "--workers",
            "4",
            "--duration",
            "0.7",
            "--pid",
            &pid,
            "--settle",
            "0",
        ]);
        assert_eq!(s["mode"], "sessions");
        assert_eq!(s["tls"], tls);
        assert!(number(&s, "sessions") > 0.0, "{s:?}");
        assert!(number(&s, "rate") > 0.0);
        assert_eq!(s["errors"], "0", "{s:?}");
        assert!(number(&s, "p99_ms") >= number(&s, "p50_ms"));
        assert!(number(&s, "server_cpu_us_per_op") >= 0.0);
        if tls != "none" {
            assert_eq!(s["kx"], "X25519");
        }
    }

    // An offered rate well below saturation: about rate × duration sessions.
    let p = loadgen(&[
        "sessions",
        "--target",
        &implicit,
        "--ca",
        &ca,
        "--workers",
        "8",
        "--rate",
        "50",
        "--duration",
        "0.8",
    ]);
    let n = number(&p, "sessions");
    assert!((25.0..=50.0).contains(&n), "paced: {p:?}");
    assert_eq!(p["offered"], "50/s");
    assert_eq!(p["errors"], "0", "{p:?}");

    // A fixed count, pipelined, over implicit TLS; then STARTTLS without pipelining.
    let m = loadgen(&[
        "messages",
        "--target",
        &implicit,
        "--insecure",
        "--connections",
        "3",
        "--count",
        "300",
        "--size",
        "4096",
        "--pid",
        &pid,
        "--settle",
        "0",
    ]);
    assert_eq!(m["messages"], "300", "{m:?}");
    assert_eq!(m["size"], "4096");
    assert_eq!(m["errors"], "0", "{m:?}");
    assert_eq!(m["replies"], "0", "{m:?}");
    assert!(number(&m, "mb_s") > 0.0);
    let m = loadgen(&[
        "messages",
        "--target",
        &starttls,
        "--tls",
        "starttls",
        "--ca",
        &ca,
        "--connections",
        "2",
        "--duration",
        "0.5",
        "--no-pipelining",
        "--size",
        "100000",
    ]);
    assert!(number(&m, "messages") > 0.0, "{m:?}");
    assert_eq!(m["errors"], "0", "{m:?}");
    assert!(
        !m.contains_key("server_cpu_us_per_op"),
        "no --pid, no server CPU"
    );

    let i = loadgen(&[
        "idle",
        "--target",
        &implicit,
        "--ca",
        &ca,
        "--connections",
        "20",
        "--hold",
        "0.3",
        "--pid",
        &pid,
        "--settle",
        "0",
    ]);
    assert_eq!(i["established"], "20", "{i:?}");
    assert_eq!(i["errors"], "0", "{i:?}");
    assert!(i.contains_key("rss_kib_per_conn"));
    assert!(i.contains_key("pss_kib_per_conn"));

    // A refused port is counted, not fatal, and the run stays bounded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().to_string();
    drop(closed);
    let r = loadgen(&[
        "sessions",
        "--target",
        &port,
        "--tls",
        "none",
        "--workers",
        "2",
        "--duration",
        "0.3",
    ]);
    assert_eq!(r["sessions"], "0");
    assert!(r["errors"].starts_with("connect:"), "{r:?}");
}

/// A `delay-proxy` child process, killed when dropped.
struct DelayProxy {
    child: std::process::Child,
    addr: String,
}

impl DelayProxy {
    fn start(target: &str, delay_ms: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_smtps-loadgen"))
            .args([
                "delay-proxy",
                "--listen",
                "127.0.0.1:0",
                "--target",
                target,
                "--delay-ms",
                delay_ms,
                "--idle-timeout",
                "30",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // "delay-proxy: 127.0.0.1:PORT -> TARGET with D ms each way"; EOF if it failed.
        let mut line = String::new();
        std::io::BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("delay-proxy: ")
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("no address from delay-proxy: {line:?}"))
            .to_owned();
        Self { child, addr }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rtt_through_the_delay_proxy() {
    let server = start();
    let ca = server.dir.join("cert.pem").display().to_string();
    let delay_ms = 5.0;
    let rtt_ms = 2.0 * delay_ms;
    for (index, tls) in [(0, "implicit"), (1, "starttls")] {
        let proxy = DelayProxy::start(&server.addrs[index].to_string(), "5");
        let r = loadgen(&[
            "rtt",
            "--target",
            &proxy.addr,
            "--tls",
            tls,
            "--ca",
            &ca,
            "--count",
            "3",
            "--delay-ms",
            "5",
        ]);
        assert_eq!(r["mode"], "rtt");
        assert_eq!(r["tls"], tls);
        assert_eq!(r["sessions"], "3", "{r:?}");
        assert_eq!(r["errors"], "0", "{r:?}");
        assert_eq!(r["pipelining"], "used", "smtpsd offers PIPELINING: {r:?}");
        assert_eq!(r["kx"], "X25519");
        // Lower bounds only (the machine may be slow, never fast): the flights each needs.
        let (banner, ehlo, message, quit) = match tls {
            // ClientHello and the server's flight (with the banner as 0.5-RTT data): 1;
            // Finished+EHLO and its reply: 2; MAIL/RCPT/DATA: 3; body: 4; QUIT: 5.
            "implicit" => (1.0, 2.0, 4.0, 5.0),
            // The banner after the connect's last leg: 1; EHLO 2; STARTTLS 3; handshake 4;
            // EHLO 5; MAIL/RCPT/DATA 6; body 7; QUIT 8.
            _ => (1.0, 2.0, 7.0, 8.0),
        };
        for (key, trips) in [
            ("banner_ms", banner),
            ("ehlo_ms", ehlo),
            ("message_ms", message),
            ("quit_ms", quit),
        ] {
            assert!(
                number(&r, key) >= trips * rtt_ms * 0.95,
                "{key} below {trips} round trips: {r:?}"
            );
        }
        assert!(number(&r, "quit_ms") >= number(&r, "message_ms"));
        assert!(r.contains_key("ehlo_rtt"), "{r:?}");
        if tls == "starttls" {
            assert!(number(&r, "ehlo_tls_ms") >= 5.0 * rtt_ms * 0.95, "{r:?}");
        }
    }
}
