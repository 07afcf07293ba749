//! `smtpsd`: the standalone SMTPS daemon (the command line comes next).

fn main() {}
