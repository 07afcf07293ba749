//! `smtps-loadgen`: a load generator for SMTP servers over implicit TLS, STARTTLS or plain TCP.
//!
//! Four modes (`sessions`, `messages`, `idle`, `rtt`), each printing one `key=value` summary
//! line on standard output, and `delay-proxy`, a TCP proxy that adds a fixed one-way delay (for
//! `rtt` on a machine without netem). See `smtps-loadgen --help`.

mod delay;
mod engine;
mod message;
mod procfs;
mod proxy;
mod reply;
mod rtt;
mod stats;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::{Mode, Plan, Security};
use stats::Stats;

const HELP: &str = "\
smtps-loadgen: load for SMTP servers over implicit TLS, STARTTLS or plain TCP

USAGE:
    smtps-loadgen sessions --target HOST:PORT [OPTIONS]
        W workers, each: connect, TLS, banner, EHLO, QUIT, close; again until the end
    smtps-loadgen messages --target HOST:PORT [OPTIONS]
        C persistent connections sending messages of S bytes (MAIL, RCPT and DATA
        pipelined when PIPELINING is offered, then the dot-stuffed body)
    smtps-loadgen idle --target HOST:PORT --pid PID [OPTIONS]
        N connections held open after EHLO; the server's memory per connection; once
        every connection is established or failed (or --duration is over) one line
        `idle: established=.. failed=.. setup_s=.. client_rss_kib=..` on standard
        error, then the hold
    smtps-loadgen rtt --target HOST:PORT [--delay-ms D] [OPTIONS]
        one session at a time, --count N times (default 10): connect, TLS, banner,
        EHLO (after the banner is read), [STARTTLS, TLS, EHLO], one message (MAIL,
        RCPT and DATA pipelined when PIPELINING is offered), QUIT; the median time
        from connect() returning to each reply, and with --delay-ms (the one-way
        delay of a delay-proxy in the path) the same in round trips (2 x D);
        one line per session on standard error; --warmup W sessions first, not
        counted (default 1)
    smtps-loadgen delay-proxy --listen HOST:PORT --target HOST:PORT --delay-ms D
            [--log FILE] [--idle-timeout SECS]
        a TCP proxy that holds every chunk D ms in each direction (order and chunk
        boundaries kept, half-close passed on, TCP_NODELAY), connects to the target
        D ms after each accept (the last leg of the TCP handshake); --log: one line
        per chunk (ms since accept when read and when sent, direction, size, TLS
        records or text); runs until killed

Each mode prints one line of key=value pairs on standard output.

TARGET AND TLS:
    --target HOST:PORT      the server (loopback only: this is a load generator)
    --tls MODE              implicit (default), starttls or none
    --ca FILE               trust the certificates of this PEM file
    --insecure              accept any server certificate (benchmarks only)
    --server-name NAME      SNI and certificate name (default: localhost)
    --suites LIST           cipher suites offered, comma-separated rustls names, in order
                            (default: rustls' TLS 1.3 suites, AES-256-GCM first)
    --groups LIST           key exchange groups offered, comma-separated rustls names
                            (default: X25519; e.g. X25519MLKEM768,X25519)
    TLS is always 1.3 with full handshakes: no session resumption.

PROXY PROTOCOL (a load balancer in front of the server):
    --proxy VERSION         v1 (text) or v2 (binary): send a PROXY protocol header as the
                            first octets of every connection, before the TLS ClientHello
                            (in the same write) or, for starttls and none, before the
                            banner is read (default: none, no header)
    --proxy-source CIDR     the fake clients named in the headers: each connection takes
                            the next host of the range, then the range starts over with
                            the next source port (1024 up), so that no one address carries
                            the load (default: 192.0.2.0/24, or 2001:db8::/120 for an IPv6
                            target); the destination is the --target address. The server
                            must expect the header on that listener.

LOAD:
    --threads N             event-loop threads (default: the number of cores)
    --workers W             sessions: concurrent sessions (default: 32)
    --connections N         messages: connections (default: 16); idle: (default: 1000)
    --duration SECS         how long to start new operations (default: 10, or 600 as an
                            upper bound when --count is given); idle: the longest time
                            to open all connections (default: --timeout)
    --count N               stop after N operations (sessions or messages)
    --size BYTES            messages: message size (default: 2048)
    --no-pipelining         messages: one command at a time even with PIPELINING
    --per-connection N      messages: QUIT after N messages and open a new connection (the
                            first message of each connection counts from the connect, so
                            with 1 a message's latency and CPU include the TLS session);
                            default: persistent connections
    --rate R                sessions: start at most R sessions per second in all (an
                            offered load below saturation, for latency); default: as fast
                            as the workers go
    --hold SECS             idle: hold the connections this long (default: 3)
    --setup-window N        idle: connections each thread has in setup (connect to the
                            EHLO reply) at once; the next opens as one is established
                            or fails (default: 64)
    --timeout SECS          longest single operation or connection setup (default: 30)
    --sources N             bind local addresses 127.0.0.1 .. 127.0.0.N in turn (for more
                            than ~28,000 connections to one port)
    --source-ips LIST       bind these local addresses in turn: comma-separated addresses
                            or IPv4 ranges in the last octet (127.0.0.2-127.0.0.9); the
                            port is chosen at connect (IP_BIND_ADDRESS_NO_PORT), so each
                            address gives up to a port range of connections per server
    --ehlo NAME --from ADDR --to ADDR
                            EHLO name and envelope (client.test, loadgen@client.test,
                            sink@mx.test)

MEASURING THE SERVER:
    --pid PID[,PID...]      the server's processes: CPU time (utime+stime, with their
                            children's) per operation over the run, summed over each
                            process tree; idle mode also reads VmRSS and Pss
    --settle SECS           wait after the load before the last sample (default: 0.5)
    --label TEXT            add label=TEXT to the summary line
    --help                  print this help

SUMMARY KEYS:
    always:   mode tls proxy target threads (proxy_source with --proxy)
    sessions: sessions rate p50_ms p90_ms p99_ms max_ms errors replies
    rtt:      sessions pipelining (used, offered-not-used, not-offered), and for each
              milestone (tls banner ehlo [starttls ehlo_tls] data message quit)
              NAME_ms (median) NAME_min_ms NAME_max_ms, NAME_rtt with --delay-ms
    messages: messages rate mb_s p50_ms .. max_ms errors replies (non-250 replies by code),
              per_connection with --per-connection
    idle:     established setup_s client_rss_kib; with --pid rss_kib_per_conn pss_kib_per_conn
    with --pid: server_cpu_s server_cpu_us_per_op server_procs; always client_cpu_us_per_op
";

/// The parsed command line.
struct Options {
    mode: Mode,
    /// `rtt`: one timed session at a time instead of the load of `mode`.
    rtt: bool,
    /// `rtt`: the one-way delay in the path, to express times in round trips.
    delay: Option<Duration>,
    /// `rtt`: sessions run first and not counted.
    warmup: u64,
    target: SocketAddr,
    security: Security,
    trust: Option<tls::Trust>,
    server_name: String,
    groups: Vec<String>,
    suites: Vec<String>,
    threads: usize,
    workers: Option<usize>,
    connections: Option<usize>,
    duration: Option<Duration>,
    count: Option<u64>,
    size: usize,
    pipelining: bool,
    per_connection: Option<u64>,
    rate: Option<f64>,
    hold: Duration,
    setup_window: usize,
    timeout: Duration,
    sources: usize,
    source_ips: Vec<IpAddr>,
    proxy: Option<proxy::Version>,
    proxy_source: Option<proxy::SourceRange>,
    ehlo: String,
    from: String,
    to: String,
    pids: Vec<u32>,
    settle: Duration,
    label: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") || args.is_empty() {
        return Ok(None);
    }
    let (mode, rtt) = match args[0].as_str() {
        "sessions" => (Mode::Sessions, false),
        "messages" => (Mode::Messages, false),
        "idle" => (Mode::Idle, false),
        "rtt" => (Mode::Sessions, true),
        other => {
            return Err(format!(
                "unknown mode {other:?}: sessions, messages, idle, rtt or delay-proxy"
            ));
        }
    };
    let mut target = None;
    let mut o = Options {
        mode,
        rtt,
        delay: None,
        warmup: 1,
        target: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        security: Security::Implicit,
        trust: None,
        server_name: "localhost".to_owned(),
        groups: vec!["X25519".to_owned()],
        suites: Vec::new(),
        threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        workers: None,
        connections: None,
        duration: None,
        count: None,
        size: 2048,
        pipelining: true,
        per_connection: None,
        rate: None,
        hold: Duration::from_secs(3),
        setup_window: 64,
        timeout: Duration::from_secs(30),
        sources: 0,
        source_ips: Vec::new(),
        proxy: None,
        proxy_source: None,
        ehlo: "client.test".to_owned(),
        from: "loadgen@client.test".to_owned(),
        to: "sink@mx.test".to_owned(),
        pids: Vec::new(),
        settle: Duration::from_millis(500),
        label: None,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (flag.as_str(), None),
        };
        match name {
            "--insecure" => {
                o.trust = Some(tls::Trust::Insecure);
                continue;
            }
            "--no-pipelining" => {
                o.pipelining = false;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        let num = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: expected a number, got {v:?}"))
        };
        let secs = |v: &str| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e6)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{name}: expected seconds, got {v:?}"))
        };
        let size = |v: &str| -> Result<usize, String> {
            usize::try_from(num(v)?).map_err(|_| format!("{name}: too large"))
        };
        match name {
            "--target" => {
                let addr = value
                    .to_socket_addrs()
                    .map_err(|e| format!("--target {value}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--target {value}: no address"))?;
                target = Some(addr);
            }
            "--tls" => {
                o.security = match value.as_str() {
                    "implicit" => Security::Implicit,
                    "starttls" => Security::StartTls,
                    "none" => Security::None,
                    _ => return Err(format!("--tls {value}: implicit, starttls or none")),
                };
            }
            "--ca" => o.trust = Some(tls::Trust::CaFile(value)),
            "--server-name" => o.server_name = value,
            "--suites" => {
                o.suites = value
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--groups" => {
                o.groups = value
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--threads" => o.threads = size(&value)?.max(1),
            "--workers" => o.workers = Some(size(&value)?.max(1)),
            "--connections" => o.connections = Some(size(&value)?.max(1)),
            "--duration" => o.duration = Some(secs(&value)?),
            "--count" => o.count = Some(num(&value)?),
            "--size" => o.size = size(&value)?,
            "--per-connection" => o.per_connection = Some(num(&value)?.max(1)),
            "--hold" => o.hold = secs(&value)?,
            "--setup-window" => o.setup_window = size(&value)?.max(1),
            "--rate" => {
                o.rate = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e6)
                        .ok_or_else(|| {
                            format!("--rate: expected sessions per second, got {value:?}")
                        })?,
                );
            }
            "--timeout" => o.timeout = secs(&value)?.max(Duration::from_millis(100)),
            "--sources" => o.sources = size(&value)?.min(250),
            "--source-ips" => o.source_ips = parse_source_ips(&value)?,
            "--proxy" => {
                o.proxy = match value.as_str() {
                    "v1" => Some(proxy::Version::V1),
                    "v2" => Some(proxy::Version::V2),
                    "none" => None,
                    _ => return Err(format!("--proxy {value}: v1, v2 or none")),
                };
            }
            "--proxy-source" => o.proxy_source = Some(proxy::SourceRange::parse(&value)?),
            "--ehlo" => o.ehlo = value,
            "--from" => o.from = value,
            "--to" => o.to = value,
            "--pid" => {
                for p in value.split(',').filter(|p| !p.is_empty()) {
                    o.pids.push(
                        p.parse()
                            .map_err(|_| format!("--pid: expected process ids, got {p:?}"))?,
                    );
                }
            }
            "--settle" => o.settle = secs(&value)?,
            "--label" => o.label = Some(value),
            "--delay-ms" => o.delay = Some(millis(name, &value)?),
            "--warmup" => o.warmup = num(&value)?,
            _ => return Err(format!("unknown option {name} (see --help)")),
        }
    }
    o.target = target.ok_or("--target HOST:PORT is required")?;
    if o.security != Security::None && o.trust.is_none() {
        return Err("TLS needs --ca FILE or --insecure".to_owned());
    }
    if o.sources > 0 && !matches!(o.target.ip(), IpAddr::V4(ip) if ip.is_loopback()) {
        return Err("--sources needs an IPv4 loopback target".to_owned());
    }
    if !o.source_ips.is_empty() {
        if o.sources > 0 {
            return Err("--sources and --source-ips exclude each other".to_owned());
        }
        if let Some(ip) = o
            .source_ips
            .iter()
            .find(|ip| ip.is_ipv4() != o.target.is_ipv4())
        {
            return Err(format!(
                "--source-ips {ip}: not the address family of --target {}",
                o.target
            ));
        }
    }
    match (o.proxy, o.proxy_source) {
        (None, Some(_)) => return Err("--proxy-source needs --proxy v1 or v2".to_owned()),
        (Some(_), Some(range)) if range.is_ipv4() != o.target.is_ipv4() => {
            return Err(format!(
                "--proxy-source {range}: not the address family of --target {}",
                o.target
            ));
        }
        (Some(_), None) => o.proxy_source = Some(proxy::SourceRange::default_for(o.target.ip())),
        _ => {}
    }
    Ok(Some(o))
}

/// `--source-ips`: comma-separated addresses, or IPv4 ranges `A.B.C.D-A.B.C.E` (or
/// `A.B.C.D-E`) over the last octet.
fn parse_source_ips(value: &str) -> Result<Vec<IpAddr>, String> {
    let mut ips = Vec::new();
    for item in value.split(',').filter(|i| !i.is_empty()) {
        let bad = || format!("--source-ips: {item:?} is not an address or an IPv4 range");
        let Some((first, last)) = item.split_once('-') else {
            ips.push(item.parse::<IpAddr>().map_err(|_| bad())?);
            continue;
        };
        let first: Ipv4Addr = first.parse().map_err(|_| bad())?;
        let last: u8 = match last.parse::<Ipv4Addr>() {
            Ok(ip) if ip.octets()[..3] == first.octets()[..3] => ip.octets()[3],
            Ok(_) => {
                return Err(format!(
                    "--source-ips {item}: a range spans the last octet only"
                ));
            }
            Err(_) => last.parse().map_err(|_| bad())?,
        };
        let [a, b, c, lo] = first.octets();
        if last < lo {
            return Err(format!("--source-ips {item}: an empty range"));
        }
        ips.extend((lo..=last).map(|d| IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
    }
    if ips.is_empty() {
        return Err("--source-ips: no address".to_owned());
    }
    Ok(ips)
}

/// Milliseconds, fractions allowed.
fn millis(name: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .ok_or_else(|| format!("{name}: expected milliseconds, got {v:?}"))
}

/// The `delay-proxy` command line.
struct DelayOptions {
    listen: SocketAddr,
    config: delay::Config,
    log: Option<String>,
}

fn parse_delay_args(args: &[String]) -> Result<DelayOptions, String> {
    let (mut listen, mut target, mut delay) = (None, None, None);
    let mut log = None;
    let mut idle_timeout = Duration::from_secs(300);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, v.to_owned()),
            _ => (
                flag.as_str(),
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))?,
            ),
        };
        let addr = |v: &str| -> Result<SocketAddr, String> {
            v.to_socket_addrs()
                .map_err(|e| format!("{name} {v}: {e}"))?
                .next()
                .ok_or_else(|| format!("{name} {v}: no address"))
        };
        match name {
            "--listen" => listen = Some(addr(&value)?),
            "--target" => target = Some(addr(&value)?),
            "--delay-ms" => delay = Some(millis(name, &value)?),
            "--log" => log = Some(value),
            "--idle-timeout" => {
                idle_timeout = millis(name, &value)?
                    .checked_mul(1000)
                    .filter(|d| *d >= Duration::from_millis(100))
                    .ok_or_else(|| format!("{name}: at least 0.1 s"))?;
            }
            _ => return Err(format!("delay-proxy: unknown option {name} (see --help)")),
        }
    }
    Ok(DelayOptions {
        listen: listen.ok_or("delay-proxy needs --listen HOST:PORT")?,
        config: delay::Config {
            target: target.ok_or("delay-proxy needs --target HOST:PORT")?,
            delay: delay.ok_or("delay-proxy needs --delay-ms D")?,
            idle_timeout,
        },
        log,
    })
}

fn run_delay_proxy(args: &[String]) -> ExitCode {
    let o = match parse_delay_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("smtps-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match &o.log {
        None => None,
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                let w: Box<dyn std::io::Write + Send> = Box::new(std::io::BufWriter::new(f));
                Some(Arc::new(std::sync::Mutex::new(w)))
            }
            Err(e) => {
                eprintln!("smtps-loadgen: --log {path}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match delay::run(o.listen, o.config, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtps-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "delay-proxy")
        && !args.iter().any(|a| a == "--help" || a == "-h")
    {
        return run_delay_proxy(&args[1..]);
    }
    let options = match parse_args(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("smtps-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let result = if options.rtt {
        run_rtt(&options)
    } else {
        run(&options)
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtps-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The 1-minute load average, from /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

/// The `rtt` mode: `--count` sessions one after another, the median of each milestone.
fn run_rtt(o: &Options) -> Result<String, String> {
    let tls_config = tls::client_config(
        o.trust.as_ref().unwrap_or(&tls::Trust::Insecure),
        &o.groups,
        &o.suites,
    )?;
    let message = message::generate(o.size, &o.from, &o.to);
    let plan = rtt::Plan {
        target: o.target,
        security: o.security,
        tls: tls_config,
        server_name: tls::server_name(&o.server_name)?,
        ehlo: format!("EHLO {}\r\n", o.ehlo).into_bytes(),
        envelope: [
            format!("MAIL FROM:<{}>\r\n", o.from).into_bytes(),
            format!("RCPT TO:<{}>\r\n", o.to).into_bytes(),
            b"DATA\r\n".to_vec(),
        ],
        payload: message::dot_stuff(&message),
        pipelining: o.pipelining,
        timeout: o.timeout,
    };
    let count = o.count.unwrap_or(10).max(1);
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
    let mut sessions = Vec::new();
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..o.warmup {
        if let Err(e) = rtt::session(&plan) {
            eprintln!("rtt warmup={} error={e:?}", i + 1);
        }
    }
    for i in 0..count {
        match rtt::session(&plan) {
            Ok(m) => {
                let fields: Vec<String> = rtt::named(&m)
                    .into_iter()
                    .map(|(name, t)| format!("{name}_ms={}", ms(t)))
                    .collect();
                let hello = m
                    .hello
                    .map_or_else(String::new, |t| format!(" hello_sent_ms={}", ms(t)));
                eprintln!(
                    "rtt session={} connect_ms={}{hello} {}",
                    i + 1,
                    ms(m.connect),
                    fields.join(" ")
                );
                sessions.push(m);
            }
            Err(e) => {
                eprintln!("rtt session={} error={e:?}", i + 1);
                *errors.entry(e).or_default() += 1;
            }
        }
    }
    let Some(first) = sessions.first() else {
        return Err(format!("every session failed: {errors:?}"));
    };
    let mut line = format!(
        "mode=rtt tls={} target={} sessions={} pipelining={} delay_ms={}",
        o.security.name(),
        o.target,
        sessions.len(),
        first.pipelining.map_or("-", rtt::Pipelining::name),
        o.delay.map_or_else(|| "-".to_owned(), ms),
    );
    for (name, _) in rtt::named(first) {
        let mut values: Vec<Duration> = sessions
            .iter()
            .filter_map(|m| {
                rtt::named(m)
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| t)
            })
            .collect();
        let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
            continue;
        };
        let Some(median) = rtt::median(&mut values) else {
            continue;
        };
        line += &format!(
            " {name}_ms={} {name}_min_ms={} {name}_max_ms={}",
            ms(median),
            ms(min),
            ms(max)
        );
        if let Some(delay) = o.delay {
            line += &format!(" {name}_rtt={}", rtt::round_trips(median, delay));
        }
    }
    let errors = if errors.is_empty() {
        "0".to_owned()
    } else {
        errors.values().sum::<u64>().to_string()
    };
    line += &format!(" errors={errors}");
    if let Some((suite, group)) = &first.tls_params {
        line += &format!(" suite={suite} kx={group}");
    }
    if let Some(label) = &o.label {
        line += &format!(" label={label}");
    }
    Ok(line)
}

#[allow(clippy::too_many_lines)]
fn run(o: &Options) -> Result<String, String> {
    let fd_limit = procfs::raise_fd_limit();
    let connections = match o.mode {
        Mode::Sessions => o.workers.unwrap_or(32),
        Mode::Messages => o.connections.unwrap_or(16),
        Mode::Idle => o.connections.unwrap_or(1000),
    };
    let needed = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    if needed > fd_limit {
        return Err(format!(
            "{connections} connections need more open files than the limit {fd_limit} \
             (the hard limit; raise it outside the benchmark)"
        ));
    }
    let tls_config = tls::client_config(
        o.trust.as_ref().unwrap_or(&tls::Trust::Insecure),
        &o.groups,
        &o.suites,
    )?;
    let message = message::generate(o.size, &o.from, &o.to);
    let duration = o.duration.unwrap_or(if o.count.is_some() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(10)
    });
    let sources = if o.source_ips.is_empty() {
        (1..=o.sources)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(i).unwrap_or(1))))
            .collect()
    } else {
        o.source_ips.clone()
    };
    let load_before = loadavg();
    let start = Instant::now();
    let (deadline, hard_deadline) = match o.mode {
        Mode::Idle => {
            // `deadline`: no connection opens after it; `hard_deadline`: the end, whatever.
            let setup = o.duration.unwrap_or(o.timeout);
            (
                start + setup,
                start + setup + o.timeout + o.hold + Duration::from_secs(60),
            )
        }
        _ => (
            start + duration,
            start + duration + o.timeout + Duration::from_secs(5),
        ),
    };
    let threads = o.threads.min(connections).max(1);
    let session_interval = match (o.mode, o.rate) {
        #[allow(clippy::cast_precision_loss)]
        (Mode::Sessions, Some(rate)) => Some(Duration::from_secs_f64(threads as f64 / rate)),
        _ => None,
    };
    let plan = Arc::new(Plan {
        mode: o.mode,
        security: o.security,
        addr: o.target,
        sources,
        proxy: o
            .proxy
            .zip(o.proxy_source)
            .map(|(version, range)| proxy::Proxy::new(version, range)),
        tls: tls_config,
        server_name: tls::server_name(&o.server_name)?,
        ehlo: format!("EHLO {}\r\n", o.ehlo).into_bytes(),
        envelope: [
            format!("MAIL FROM:<{}>\r\n", o.from).into_bytes(),
            format!("RCPT TO:<{}>\r\n", o.to).into_bytes(),
            b"DATA\r\n".to_vec(),
        ],
        payload: message::dot_stuff(&message).into(),
        message_bytes: u64::try_from(message.len()).unwrap_or(0),
        pipelining: o.pipelining,
        per_connection: o.per_connection,
        deadline,
        hard_deadline,
        count: o.count,
        claimed: AtomicU64::new(0),
        session_interval,
        op_timeout: o.timeout,
        established: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        setup_window: o.setup_window,
    });
    let memory = o.mode == Mode::Idle;
    let server_before = (!o.pids.is_empty()).then(|| procfs::sample(&o.pids, memory));
    let client_before = procfs::own_cpu_ticks();

    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let share = connections / threads + usize::from(t < connections % threads);
        let plan = Arc::clone(&plan);
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || engine::run_thread(&plan, share, t))
                .map_err(|e| format!("cannot start a thread: {e}"))?,
        );
    }

    let mut idle_fields = String::new();
    if o.mode == Mode::Idle {
        let wanted = u64::try_from(connections).unwrap_or(u64::MAX);
        let setup_end = plan.deadline + o.timeout;
        while plan.established.load(Ordering::Relaxed) + plan.failed.load(Ordering::Relaxed)
            < wanted
            && Instant::now() < setup_end
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let setup_s = start.elapsed().as_secs_f64();
        eprintln!(
            "idle: established={} failed={} setup_s={setup_s:.2} client_rss_kib={} hold_s={:.1}",
            plan.established.load(Ordering::Relaxed),
            plan.failed.load(Ordering::Relaxed),
            procfs::own_rss_kib(),
            o.hold.as_secs_f64()
        );
        std::thread::sleep(o.settle.max(Duration::from_millis(500)));
        let established = plan.established.load(Ordering::Relaxed);
        if let (Some(before), false) = (server_before, o.pids.is_empty()) {
            let after = procfs::sample(&o.pids, true);
            let per = |b: u64, a: u64| {
                if established == 0 {
                    "-".to_owned()
                } else {
                    #[allow(clippy::cast_precision_loss)]
                    let v = (a as f64 - b as f64) / established as f64;
                    format!("{v:.1}")
                }
            };
            idle_fields = format!(
                " rss_before_kib={} rss_after_kib={} rss_kib_per_conn={} pss_before_kib={} \
                 pss_after_kib={} pss_kib_per_conn={}",
                before.rss_kib,
                after.rss_kib,
                per(before.rss_kib, after.rss_kib),
                before.pss_kib,
                after.pss_kib,
                per(before.pss_kib, after.pss_kib),
            );
        }
        idle_fields = format!(
            " established={established} setup_s={setup_s:.2} client_rss_kib={}{idle_fields}",
            procfs::own_rss_kib()
        );
        let hold_end = Instant::now() + o.hold;
        while Instant::now() < hold_end {
            std::thread::sleep(Duration::from_millis(50));
        }
        plan.stop.store(true, Ordering::Relaxed);
    }

    let mut total = Stats::default();
    let mut last = None;
    let mut tls_params = None;
    for h in handles {
        let r = h.join().map_err(|_| "a load thread panicked".to_owned())?;
        total.merge(r.stats);
        last = last.max(r.last_completion);
        if tls_params.is_none() {
            tls_params = r.tls_params;
        }
    }
    let end = Instant::now();
    let client_cpu = procfs::own_cpu_ticks().saturating_sub(client_before);
    let server = server_before.map(|before| {
        std::thread::sleep(o.settle);
        let after = procfs::sample(&o.pids, false);
        (
            after.cpu_ticks.saturating_sub(before.cpu_ticks),
            after.processes,
        )
    });

    let elapsed = match o.mode {
        Mode::Idle => end - start,
        _ => last.unwrap_or(end).max(start + Duration::from_millis(1)) - start,
    };
    let secs = elapsed.as_secs_f64();
    let ops = match o.mode {
        Mode::Idle => total.established,
        _ => total.ops,
    };
    #[allow(clippy::cast_precision_loss)]
    let rate = ops as f64 / secs;
    let mut line = format!(
        "mode={} tls={} proxy={} target={} threads={threads}",
        match o.mode {
            Mode::Sessions => "sessions",
            Mode::Messages => "messages",
            Mode::Idle => "idle",
        },
        o.security.name(),
        o.proxy.map_or("none", proxy::Version::name),
        o.target,
    );
    if let (Some(_), Some(range)) = (o.proxy, o.proxy_source) {
        line += &format!(" proxy_source={range}");
    }
    match o.mode {
        Mode::Sessions => {
            line += &format!(
                " workers={connections}{} duration_s={secs:.2} sessions={} rate={rate:.1}/s {}",
                o.rate
                    .map_or_else(String::new, |r| format!(" offered={r}/s")),
                total.ops,
                stats::latency_fields(&mut total.latencies_us)
            );
        }
        Mode::Messages => {
            #[allow(clippy::cast_precision_loss)]
            let mb_s = total.bytes as f64 / secs / 1e6;
            line += &format!(
                " connections={connections} size={} pipelining={}{} duration_s={secs:.2} \
                 messages={} rate={rate:.1}/s mb_s={mb_s:.2} {}",
                plan.message_bytes,
                o.pipelining,
                o.per_connection
                    .map_or_else(String::new, |n| format!(" per_connection={n}")),
                total.ops,
                stats::latency_fields(&mut total.latencies_us)
            );
        }
        Mode::Idle => {
            line += &format!(
                " connections={connections} hold_s={:.1}{idle_fields}",
                o.hold.as_secs_f64()
            );
        }
    }
    line += &format!(
        " errors={} replies={}",
        stats::counts(&total.errors),
        stats::counts(&total.replies)
    );
    if let Some((suite, group)) = tls_params {
        line += &format!(" suite={suite} kx={group}");
    }
    let ticks = procfs::clock_ticks_per_second();
    #[allow(clippy::cast_precision_loss)]
    let per_op_us = |cpu_ticks: u64| {
        if ops == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", cpu_ticks as f64 * 1e6 / ticks as f64 / ops as f64)
        }
    };
    if let Some((cpu, procs)) = server {
        #[allow(clippy::cast_precision_loss)]
        let cpu_s = cpu as f64 / ticks as f64;
        line += &format!(
            " server_cpu_s={cpu_s:.2} server_cpu_us_per_op={} server_procs={procs}",
            per_op_us(cpu)
        );
    }
    line += &format!(
        " client_cpu_us_per_op={} loadavg={load_before}",
        per_op_us(client_cpu)
    );
    if let Some(label) = &o.label {
        line += &format!(" label={label}");
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_options() {
        let o = parse_args(&args(
            "messages --target 127.0.0.1:2465 --insecure --connections 8 --size=4096 --count 100 --pid 1,2",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.per_connection, None);
        let one = parse_args(&args(
            "messages --target 127.0.0.1:2465 --insecure --per-connection 1",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(one.per_connection, Some(1));
        assert_eq!(o.mode, Mode::Messages);
        assert_eq!(o.target.port(), 2465);
        assert_eq!(o.connections, Some(8));
        assert_eq!(o.size, 4096);
        assert_eq!(o.count, Some(100));
        assert_eq!(o.pids, [1, 2]);
        assert!(parse_args(&args("--help")).unwrap().is_none());
        assert!(
            parse_args(&args("sessions --target 127.0.0.1:1")).is_err(),
            "trust needed"
        );
        assert!(parse_args(&args("sessions --target 127.0.0.1:1 --tls none")).is_ok());
        assert!(parse_args(&args("bogus --target 127.0.0.1:1")).is_err());
        assert!(
            parse_args(&args("sessions --tls none")).is_err(),
            "target needed"
        );
        assert!(parse_args(&args("sessions --target 127.0.0.1:1 --tls none --workers")).is_err());
    }

    #[test]
    fn parses_rtt_and_delay_proxy_options() {
        let o = parse_args(&args(
            "rtt --target 127.0.0.1:1 --tls starttls --insecure --count 5 --delay-ms 12.5 --warmup 0",
        ))
        .unwrap()
        .unwrap();
        assert!(o.rtt);
        assert_eq!(o.security, Security::StartTls);
        assert_eq!(o.count, Some(5));
        assert_eq!(o.delay, Some(Duration::from_micros(12_500)));
        assert_eq!(o.warmup, 0);
        assert!(parse_args(&args("rtt --target 127.0.0.1:1 --insecure --delay-ms x")).is_err());

        let d = parse_delay_args(&args(
            "--listen 127.0.0.1:0 --target=127.0.0.1:25 --delay-ms 10 --log /tmp/x --idle-timeout 5",
        ))
        .unwrap();
        assert_eq!(d.config.delay, Duration::from_millis(10));
        assert_eq!(d.config.target.port(), 25);
        assert_eq!(d.config.idle_timeout, Duration::from_secs(5));
        assert_eq!(d.log.as_deref(), Some("/tmp/x"));
        for bad in [
            "--listen 127.0.0.1:0 --target 127.0.0.1:25",
            "--listen 127.0.0.1:0 --delay-ms 10",
            "--target 127.0.0.1:25 --delay-ms 10",
            "--listen 127.0.0.1:0 --target 127.0.0.1:25 --delay-ms 10 --bogus 1",
            "--listen 127.0.0.1:0 --target 127.0.0.1:25 --delay-ms",
        ] {
            assert!(parse_delay_args(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_source_ips() {
        let o = parse_args(&args(
            "idle --target 127.0.0.1:1 --tls none --source-ips 127.0.0.2-127.0.0.4,127.0.0.9 --setup-window 8",
        ))
        .unwrap()
        .unwrap();
        let want: Vec<IpAddr> = [2, 3, 4, 9]
            .iter()
            .map(|&d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
            .collect();
        assert_eq!(o.source_ips, want);
        assert_eq!(o.setup_window, 8);
        assert_eq!(
            parse_source_ips("127.0.0.2-5").unwrap().len(),
            4,
            "short range"
        );
        assert_eq!(parse_source_ips("::1").unwrap().len(), 1);
        for bad in [
            "",
            "127.0.0.5-127.0.0.2",
            "127.0.0.2-127.0.1.3",
            "127.0.0.2-300",
            "x",
        ] {
            assert!(parse_source_ips(bad).is_err(), "{bad}");
        }
        let plain = "idle --target 127.0.0.1:1 --tls none";
        assert!(parse_args(&args(&format!("{plain} --source-ips ::1"))).is_err());
        assert!(
            parse_args(&args(&format!(
                "{plain} --source-ips 127.0.0.2 --sources 3"
            )))
            .is_err()
        );
    }

    #[test]
    fn parses_proxy_options() {
        let plain = "sessions --target 127.0.0.1:1 --tls none";
        let o = parse_args(&args(plain)).unwrap().unwrap();
        assert_eq!((o.proxy, o.proxy_source), (None, None));
        let o = parse_args(&args(&format!("{plain} --proxy v2")))
            .unwrap()
            .unwrap();
        assert_eq!(o.proxy, Some(proxy::Version::V2));
        assert_eq!(o.proxy_source.unwrap().to_string(), "192.0.2.0/24");
        let o = parse_args(&args(&format!(
            "{plain} --proxy=v1 --proxy-source 10.1.2.3/16"
        )))
        .unwrap()
        .unwrap();
        assert_eq!(o.proxy, Some(proxy::Version::V1));
        assert_eq!(o.proxy_source.unwrap().to_string(), "10.1.0.0/16");
        let o = parse_args(&args("sessions --target [::1]:1 --tls none --proxy v1"))
            .unwrap()
            .unwrap();
        assert_eq!(o.proxy_source.unwrap().to_string(), "2001:db8::/120");
        for bad in [
            "--proxy v3",
            "--proxy-source 192.0.2.0/24",
            "--proxy v2 --proxy-source 2001:db8::/64",
            "--proxy v2 --proxy-source 192.0.2.0/40",
        ] {
            assert!(
                parse_args(&args(&format!("{plain} {bad}"))).is_err(),
                "{bad}"
            );
        }
    }
}
