//! Replays fuzz inputs through a target function, for debugging a finding on stable Rust:
//!
//! ```text
//! cargo run -p smtps-fuzzing --example replay -- session fuzz/artifacts/session/crash-…
//! ```
//!
//! With `--show` it prints the decoded input first (the operation list of a `session` input);
//! with `--strict` no known issue is tolerated.

use std::process::ExitCode;

use arbitrary::{Arbitrary, Unstructured};
use smtps_fuzzing::conn::ConnInput;
use smtps_fuzzing::data::DecoderInput;
use smtps_fuzzing::session::SessionInput;
use smtps_fuzzing::tls::TlsInput;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let show = args.iter().any(|a| a == "--show");
    let strict = args.iter().any(|a| a == "--strict");
    args.retain(|a| a != "--show" && a != "--strict");
    smtps_fuzzing::set_strict(strict);
    let Some((target, files)) = args.split_first() else {
        eprintln!("usage: replay [--show] [--strict] TARGET FILE...");
        return ExitCode::FAILURE;
    };
    let run: fn(&[u8]) = match target.as_str() {
        "command" => smtps_fuzzing::command,
        "session" => smtps_fuzzing::session,
        "data_decoder" => smtps_fuzzing::data_decoder,
        "tls_transport" => smtps_fuzzing::tls_transport,
        "conn" => smtps_fuzzing::conn,
        "proxy_header" => smtps_fuzzing::proxy_header,
        other => {
            eprintln!("unknown target {other}");
            return ExitCode::FAILURE;
        }
    };
    for file in files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(error) => {
                eprintln!("{file}: {error}");
                return ExitCode::FAILURE;
            }
        };
        if show {
            let u = Unstructured::new(&data);
            match target.as_str() {
                "session" => println!("{:#?}", SessionInput::arbitrary_take_rest(u)),
                "data_decoder" => println!("{:#?}", DecoderInput::arbitrary_take_rest(u)),
                "tls_transport" => println!("{:#?}", TlsInput::arbitrary_take_rest(u)),
                "conn" => println!("{:#?}", ConnInput::arbitrary_take_rest(u)),
                "proxy_header" => println!("{:#?}", smtps_proxy::parse_header(&data)),
                _ => println!("{:?}", String::from_utf8_lossy(&data)),
            }
        }
        println!("{file}");
        run(&data);
    }
    ExitCode::SUCCESS
}
