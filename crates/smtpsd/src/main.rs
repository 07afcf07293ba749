//! `smtpsd`: the standalone SMTPS daemon. See `smtpsd --help`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use smtpsd::config::{self, Command};
use smtpsd::users;

fn main() -> ExitCode {
    let command = match config::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("smtpsd: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", config::HELP);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("smtpsd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::HashPassword => hash_password(),
        Command::Run(_options) => {
            eprintln!("smtpsd: server not wired yet");
            ExitCode::from(2)
        }
        _ => ExitCode::from(2),
    }
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
