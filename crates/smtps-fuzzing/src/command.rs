//! The `command` target: [`smtps_proto::parse_command`] on arbitrary lines.

use smtps_proto::{Command, ReplyCode, parse_command};

use crate::wire::show;

/// Fragments that make SMTP command lines; see [`command`](crate::command()).
pub const COMMAND_TOKENS: &[&str] = &[
    "EHLO ",
    "HELO ",
    "MAIL FROM:",
    "RCPT TO:",
    "DATA",
    "BDAT ",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY ",
    "EXPN ",
    "HELP",
    "STARTTLS",
    "AUTH ",
    "PLAIN",
    "LOGIN",
    " LAST",
    "<",
    ">",
    "<>",
    "@",
    ".",
    " ",
    "  ",
    ":",
    ",",
    "=",
    "\"",
    "\\",
    "[",
    "]",
    "IPv6:",
    "::",
    "2001:db8::1",
    "192.0.2.1",
    "255.255.255.255",
    "::ffff:1.2.3.4",
    "tag",
    "example.org",
    "mail.example.com",
    "xn--bcher-kva.example",
    "bücher.example",
    "ü",
    "user",
    "Postmaster",
    "postmaster",
    "first.last",
    "\"quoted local\"",
    "@relay.example,@other.example:",
    "-",
    "_",
    "0",
    "1",
    "9",
    "100",
    "18446744073709551615",
    "18446744073709551616",
    " SIZE=",
    " BODY=7BIT",
    " BODY=8BITMIME",
    " BODY=BINARYMIME",
    " SMTPUTF8",
    " RET=FULL",
    " RET=HDRS",
    " ENVID=",
    " AUTH=",
    " REQUIRETLS",
    " NOTIFY=",
    "NEVER",
    "SUCCESS",
    "FAILURE",
    "DELAY",
    " ORCPT=",
    "rfc822;",
    "utf-8;",
    "+2B",
    "+3D",
    "+",
    "\\x{20}",
    "AHVzZXIAcGFzcw==",
    "dXNlcg==",
    "=",
    "*",
    "\t",
    "\r",
    "\x7f",
    "a",
    "Z",
];

/// Parses one command line and checks what the parser promises.
///
/// Input: a first byte choosing the mode, then the line. Mode bit 0 set maps each following
/// byte to a fragment of [`COMMAND_TOKENS`] (bytes past the table stay themselves), which
/// reaches the path and parameter parsers far faster than raw bytes do.
///
/// Checks: no panic; an accepted line is valid UTF-8 without ASCII control characters; a
/// refusal names a valid 5xx reply code and a 5.x.x enhanced status; an accepted
/// `EHLO`/`HELO` name, `MAIL`/`RCPT` path and `BDAT` size, written back with `Display`,
/// parse again to the same value.
///
/// # Panics
/// When a check fails.
pub fn command(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let line = if mode & 1 == 1 {
        map_tokens(rest, COMMAND_TOKENS)
    } else {
        rest.to_vec()
    };
    check_line(&line);
}

/// Maps each byte onto `tokens` (bytes past the table stay themselves).
pub(crate) fn map_tokens(bytes: &[u8], tokens: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    for &b in bytes {
        match tokens.get(usize::from(b)) {
            Some(token) => out.extend_from_slice(token.as_bytes()),
            None => out.push(b),
        }
    }
    out
}

fn check_line(line: &[u8]) {
    let parsed = parse_command(line);
    let command = match parsed {
        Ok(command) => command,
        Err(error) => {
            let code = error.code();
            assert!(
                ReplyCode::new(code).is_some_and(|c| c.class() == 5),
                "refusal {error:?} has code {code}, not a 5xx reply code"
            );
            let (class, _, _) = error.enhanced();
            assert_eq!(class, 5, "refusal {error:?} has a non-5 enhanced class");
            assert!(
                error.to_string().starts_with(&code.to_string()),
                "Display of {error:?} does not start with its code"
            );
            return;
        }
    };
    assert!(
        std::str::from_utf8(line).is_ok(),
        "accepted a line that is not UTF-8: {:?} -> {command:?}",
        show(line)
    );
    assert!(
        !line.iter().any(|&b| b < b' ' || b == 0x7f),
        "accepted a line with an ASCII control character: {:?} -> {command:?}",
        show(line)
    );
    match command {
        Command::Ehlo(name) => reparse(&format!("EHLO {name}"), command, line),
        Command::Helo(name) => reparse(&format!("HELO {name}"), command, line),
        Command::Mail { from, .. } => {
            let text = format!("MAIL FROM:{from}");
            match parse_command(text.as_bytes()) {
                Ok(Command::Mail { from: again, .. }) => assert_eq!(
                    again,
                    from,
                    "MAIL path does not survive Display: {:?} -> {text:?}",
                    show(line)
                ),
                other => panic!(
                    "MAIL path {from} from {:?} re-parses as {other:?}",
                    show(line)
                ),
            }
        }
        Command::Rcpt { to, .. } => {
            let text = format!("RCPT TO:{to}");
            match parse_command(text.as_bytes()) {
                Ok(Command::Rcpt { to: again, .. }) => assert_eq!(
                    again,
                    to,
                    "RCPT path does not survive Display: {:?} -> {text:?}",
                    show(line)
                ),
                other => panic!(
                    "RCPT path {to} from {:?} re-parses as {other:?}",
                    show(line)
                ),
            }
        }
        Command::Bdat { size, last } => {
            let text = format!("BDAT {size}{}", if last { " LAST" } else { "" });
            reparse(&text, command, line);
        }
        _ => {}
    }
}

fn reparse(text: &str, expected: Command<'_>, original: &[u8]) {
    let again = parse_command(text.as_bytes());
    assert_eq!(
        again,
        Ok(expected),
        "{:?} written back as {text:?} parses differently",
        show(original)
    );
}
