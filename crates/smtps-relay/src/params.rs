//! MAIL and RCPT parameters as the relay keeps them, and the commands rebuilt from them for a
//! backend that may not offer every extension the front does.
//!
//! A parameter the backend does not advertise is refused to the client with the code its
//! extension defines, never passed blind (the backend would refuse it with a 555 that names no
//! reason, or worse, ignore it).

use smtps_proto::{
    BodyType, DsnNotify, DsnReturn, EnhancedStatus, MailParameters, RcptParameters, Reply,
    ReplyCode,
};

use crate::capabilities::Capabilities;

/// [`MailParameters`], owned. `AUTH=` is not kept: the identity travels by XCLIENT LOGIN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=`.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<BodyType>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<DsnReturn>,
    /// `ENVID=`, xtext as the client sent it (checked by the parser).
    pub envid: Option<String>,
    /// `REQUIRETLS`.
    pub requiretls: bool,
}

impl From<&MailParameters<'_>> for MailParams {
    fn from(p: &MailParameters<'_>) -> Self {
        Self {
            size: p.size,
            body: p.body,
            smtputf8: p.smtputf8,
            ret: p.ret,
            envid: p.envid.map(str::to_owned),
            requiretls: p.requiretls,
        }
    }
}

/// [`RcptParameters`], owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=`.
    pub notify: Option<DsnNotify>,
    /// `ORCPT=`: address type and xtext address, as sent (checked by the parser).
    pub orcpt: Option<(String, String)>,
}

impl From<&RcptParameters<'_>> for RcptParams {
    fn from(p: &RcptParameters<'_>) -> Self {
        Self {
            notify: p.notify,
            orcpt: p
                .orcpt
                .map(|o| (o.addr_type.to_owned(), o.address.to_owned())),
        }
    }
}

fn refusal(code: ReplyCode, status: (u8, u16, u16), text: &'static str) -> Reply {
    Reply::new(
        code,
        EnhancedStatus::new(status.0, status.1, status.2),
        text,
    )
}

/// `MAIL FROM:<path> params` for a backend with `caps`, or the reply that refuses what it
/// cannot take.
///
/// # Errors
/// The client's reply for a parameter the backend does not offer.
pub fn mail_command(path: &str, p: &MailParams, caps: &Capabilities) -> Result<String, Reply> {
    let mut line = format!("MAIL FROM:{path}");
    if let Some(size) = p.size {
        if let Some(limit) = caps.size.filter(|&l| l > 0)
            && size > limit
        {
            return Err(refusal(
                ReplyCode::EXCEEDED_STORAGE,
                (5, 3, 4),
                "Message size exceeds the backend's limit",
            ));
        }
        if caps.size.is_some() {
            line.push_str(&format!(" SIZE={size}"));
        }
    }
    match p.body {
        None | Some(BodyType::SevenBit) => {
            if p.body.is_some() && caps.eight_bit_mime {
                line.push_str(" BODY=7BIT");
            }
        }
        Some(BodyType::EightBitMime) if caps.eight_bit_mime => line.push_str(" BODY=8BITMIME"),
        // The relay sends DATA; binary content cannot go that way.
        Some(_) => {
            return Err(refusal(
                ReplyCode::PARAMETERS_NOT_RECOGNIZED,
                (5, 6, 3),
                "The backend does not accept this body type",
            ));
        }
    }
    if p.smtputf8 {
        if !caps.smtputf8 {
            return Err(refusal(
                ReplyCode::PARAMETERS_NOT_RECOGNIZED,
                (5, 6, 7),
                "The backend does not accept SMTPUTF8",
            ));
        }
        line.push_str(" SMTPUTF8");
    }
    if p.ret.is_some() || p.envid.is_some() {
        if !caps.dsn {
            return Err(dsn_refused());
        }
        match p.ret {
            Some(DsnReturn::Full) => line.push_str(" RET=FULL"),
            Some(DsnReturn::Headers) => line.push_str(" RET=HDRS"),
            // A value this relay does not know (the enum may grow) is not passed blind.
            Some(_) => return Err(dsn_refused()),
            None => {}
        }
        if let Some(envid) = &p.envid {
            line.push_str(" ENVID=");
            line.push_str(envid);
        }
    }
    if p.requiretls {
        if !caps.requiretls {
            return Err(refusal(
                ReplyCode::PARAMETERS_NOT_RECOGNIZED,
                (5, 7, 30),
                "The backend does not offer REQUIRETLS",
            ));
        }
        line.push_str(" REQUIRETLS");
    }
    Ok(line)
}

/// `RCPT TO:<path> params` for a backend with `caps`.
///
/// # Errors
/// The client's reply for a parameter the backend does not offer.
pub fn rcpt_command(path: &str, p: &RcptParams, caps: &Capabilities) -> Result<String, Reply> {
    let mut line = format!("RCPT TO:{path}");
    if p.notify.is_some() || p.orcpt.is_some() {
        if !caps.dsn {
            return Err(dsn_refused());
        }
        if let Some(notify) = p.notify {
            line.push_str(" NOTIFY=");
            line.push_str(&notify.to_string());
        }
        if let Some((kind, address)) = &p.orcpt {
            line.push_str(&format!(" ORCPT={kind};{address}"));
        }
    }
    Ok(line)
}

fn dsn_refused() -> Reply {
    refusal(
        ReplyCode::PARAMETERS_NOT_RECOGNIZED,
        (5, 5, 4),
        "The backend does not offer DSN",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn full() -> Capabilities {
        Capabilities {
            eight_bit_mime: true,
            smtputf8: true,
            dsn: true,
            requiretls: true,
            size: Some(1000),
            ..Capabilities::default()
        }
    }

    fn code(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out, true);
        String::from_utf8(out).unwrap()[..9].to_owned()
    }

    #[test]
    fn mail_is_rebuilt_with_the_parameters_the_backend_offers() {
        let p = MailParams {
            size: Some(900),
            body: Some(BodyType::EightBitMime),
            smtputf8: true,
            ret: Some(DsnReturn::Headers),
            envid: Some("id+2B1".into()),
            requiretls: true,
        };
        assert_eq!(
            mail_command("<a@b.example>", &p, &full()).unwrap(),
            "MAIL FROM:<a@b.example> SIZE=900 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1 REQUIRETLS"
        );
        assert_eq!(
            mail_command("<>", &MailParams::default(), &Capabilities::default()).unwrap(),
            "MAIL FROM:<>"
        );
    }

    #[test]
    fn parameters_the_backend_lacks_are_refused_with_their_codes() {
        let none = Capabilities::default();
        let cases = [
            (
                MailParams {
                    smtputf8: true,
                    ..MailParams::default()
                },
                "555 5.6.7",
            ),
            (
                MailParams {
                    body: Some(BodyType::EightBitMime),
                    ..MailParams::default()
                },
                "555 5.6.3",
            ),
            (
                MailParams {
                    body: Some(BodyType::BinaryMime),
                    ..MailParams::default()
                },
                "555 5.6.3",
            ),
            (
                MailParams {
                    ret: Some(DsnReturn::Full),
                    ..MailParams::default()
                },
                "555 5.5.4",
            ),
            (
                MailParams {
                    requiretls: true,
                    ..MailParams::default()
                },
                "555 5.7.30",
            ),
        ];
        for (params, expected) in cases {
            let reply = mail_command("<a@b>", &params, &none).unwrap_err();
            assert!(code(&reply).starts_with(&expected[..9]), "{params:?}");
        }
        let big = MailParams {
            size: Some(1001),
            ..MailParams::default()
        };
        assert_eq!(
            code(&mail_command("<a@b>", &big, &full()).unwrap_err()),
            "552 5.3.4"
        );
        let rcpt = RcptParams {
            notify: Some(DsnNotify::NEVER),
            orcpt: None,
        };
        assert_eq!(
            code(&rcpt_command("<c@d>", &rcpt, &none).unwrap_err()),
            "555 5.5.4"
        );
    }

    #[test]
    fn rcpt_dsn_parameters_are_rebuilt() {
        let p = RcptParams {
            notify: None,
            orcpt: Some(("rfc822".into(), "c+40d".into())),
        };
        assert_eq!(
            rcpt_command("<c@d>", &p, &full()).unwrap(),
            "RCPT TO:<c@d> ORCPT=rfc822;c+40d"
        );
        assert_eq!(DsnNotify::NEVER.to_string(), "NEVER");
        assert_eq!(DsnNotify::SUCCESS.to_string(), "SUCCESS");
    }
}
