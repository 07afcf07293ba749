//! `smtpsd`: the standalone SMTPS daemon. See `smtpsd --help`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use smtpsd::config::{self, Command, Options};
use smtpsd::daemon::Daemon;
use smtpsd::systemd::{ListenFds, Notifier, Watchdog};
use smtpsd::{logger, users};

fn main() -> ExitCode {
    let command = match config::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("smtpsd: {e}");
            // check-config answers 0 or 1; a run's usage errors keep their 2.
            let checking = std::env::args_os()
                .nth(1)
                .is_some_and(|a| a == "check-config");
            return ExitCode::from(if checking { 1 } else { 2 });
        }
    };
    match command {
        Command::Help(text) | Command::Version(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig(options) => check_config(&options),
        Command::HashPassword => hash_password(),
        Command::GenTicketKey => match smtpsd::ticket_keys::generate_line() {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("smtpsd: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(options) => run(&options),
        _ => ExitCode::from(2),
    }
}

/// Runs the server until SIGTERM or SIGINT; SIGHUP reloads the certificates and ticket keys.
fn run(options: &Options) -> ExitCode {
    if let Err(error) = logger::init(options.log_level, options.log_target) {
        eprintln!("smtpsd: {error}");
        return ExitCode::FAILURE;
    }
    if options.log_target == logger::LogTarget::Journald
        && std::env::var_os("JOURNAL_STREAM").is_none()
    {
        log::warn!(
            "smtpsd: --log-target journald, but standard error is not the journal (no JOURNAL_STREAM): lines carry <N> prefixes and no timestamps"
        );
    }
    // One descriptor per connection: the default soft limit (often 1024) would cap the
    // server far below what the machine can hold.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("smtpsd: descriptor limit {limit}"),
        Err(error) => log::warn!("smtpsd: cannot raise the descriptor limit: {error}"),
    }
    // The listening sockets a supervisor handed over (systemd socket activation).
    let handed_over =
        match ListenFds::from_env().and_then(|fds| fds.map_or(Ok(Vec::new()), ListenFds::take)) {
            Ok(sockets) => sockets,
            Err(error) => {
                eprintln!("smtpsd: socket activation: {error}");
                return ExitCode::FAILURE;
            }
        };
    let notifier = std::sync::Arc::new(Notifier::from_env());
    let daemon = match Daemon::build_with(options, handed_over) {
        Ok(daemon) => daemon,
        Err(error) => {
            eprintln!("smtpsd: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _certificate_watch = daemon.tls().map(smtpsd::certwatch::start);
    let _metrics = match options.settings.metrics {
        Some(addr) => {
            let extra = daemon.tls().map(smtpsd::metrics_http::certificate_expiry);
            match smtpsd::metrics_http::MetricsEndpoint::start(addr, daemon.handle(), extra) {
                Ok(endpoint) => {
                    log::info!(
                        "smtpsd: metrics on http://{}/metrics",
                        endpoint.local_addr()
                    );
                    Some(endpoint)
                }
                Err(error) => {
                    eprintln!(
                        "smtpsd: cannot serve metrics on {addr}: {error} (choose another --metrics address)"
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let handle = daemon.handle();
    let reloader = daemon.reloader();
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("smtpsd: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let signal_handle = signals.handle();
    let grace = options.shutdown_grace;
    let signal_notifier = std::sync::Arc::clone(&notifier);
    let watcher = std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                signal_notifier.reloading();
                reloader.reload();
                signal_notifier.ready();
            } else {
                signal_notifier.stopping();
                log::info!("smtpsd: shutting down (grace {}s)", grace.as_secs());
                handle.shutdown(grace);
                return;
            }
        }
    });
    for (listener, addr) in options.listeners.iter().zip(daemon.local_addrs()) {
        log::info!(
            "smtpsd: listening on {addr} ({}{})",
            listener.mode,
            match listener.proxy {
                Some(smtps_server::Untrusted::Direct) => ", PROXY protocol from trusted sources",
                Some(_) => ", PROXY protocol required",
                None => "",
            }
        );
    }
    if options.dev {
        print_dev_instructions(
            options,
            daemon.local_addrs(),
            daemon.dev_certificate.as_deref(),
        );
    }
    // The listeners are bound and listening: clients queue from now on.
    notifier.ready();
    let watchdog = match smtpsd::systemd::watchdog_interval() {
        Some(interval) if notifier.is_active() => {
            match Watchdog::start(std::sync::Arc::clone(&notifier), interval) {
                Ok(watchdog) => Some(watchdog),
                Err(error) => {
                    log::error!("smtpsd: cannot start the watchdog thread: {error}");
                    None
                }
            }
        }
        _ => None,
    };
    let result = daemon.run();
    drop(watchdog);
    signal_handle.close();
    let _ = watcher.join();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("smtpsd: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `smtpsd check-config`: what would run, and whether everything it names loads.
fn check_config(options: &Options) -> ExitCode {
    print!("{options}");
    match smtpsd::daemon::check(options) {
        Ok(report) => {
            print!("{report}");
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("smtpsd: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_dev_instructions(
    options: &Options,
    addrs: &[std::net::SocketAddr],
    certificate: Option<&std::path::Path>,
) {
    let maildir = match &options.spool {
        config::SpoolOption::Maildir(path) => path.display().to_string(),
        config::SpoolOption::Relay(target) => format!("the backend at {}", target.address),
        _ => "(sink: messages are discarded)".to_owned(),
    };
    let implicit = options
        .listeners
        .iter()
        .zip(addrs)
        .find(|(l, _)| l.mode == smtps_server::Mode::ImplicitTls && l.proxy.is_none())
        .map(|(_, a)| *a);
    let starttls = options
        .listeners
        .iter()
        .zip(addrs)
        .find(|(l, _)| {
            l.mode.uses_tls() && l.mode != smtps_server::Mode::ImplicitTls && l.proxy.is_none()
        })
        .map(|(_, a)| *a);
    println!("smtpsd --dev: mail goes to {maildir}");
    if let Some(cert) = certificate {
        println!("self-signed certificate for localhost: {}", cert.display());
    }
    if let Some(addr) = implicit {
        println!("\nimplicit TLS on {addr}; send a test message with swaks:");
        println!(
            "  swaks --server {} --port {} --tls-on-connect --to you@localhost --from me@localhost",
            addr.ip(),
            addr.port()
        );
        println!("or with Python:");
        println!(
            "  python3 -c 'import smtplib,ssl; c=ssl._create_unverified_context(); \\\n    s=smtplib.SMTP_SSL(\"{}\", {}, context=c); \\\n    s.sendmail(\"me@localhost\", [\"you@localhost\"], \"Subject: hi\\r\\n\\r\\nhello\\r\\n\"); s.quit()'",
            addr.ip(),
            addr.port()
        );
    }
    if let Some(addr) = starttls {
        println!("\nSTARTTLS (required before MAIL) on {addr}:");
        println!(
            "  swaks --server {} --port {} --tls --to you@localhost --from me@localhost",
            addr.ip(),
            addr.port()
        );
    }
    println!("\nstop with Ctrl-C (graceful shutdown); SIGHUP reloads certificates and ticket keys");
}

/// `smtpsd hash-password`: reads one line (the password, without its line ending) from
/// standard input and prints its argon2id hash for a `--users` file.
fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (it will be shown as you type; pipe it in to avoid that): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        eprintln!("smtpsd: cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("smtpsd: the password is empty; give one line on standard input");
        return ExitCode::FAILURE;
    }
    match users::hash_password(password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpsd: {e}");
            ExitCode::FAILURE
        }
    }
}
