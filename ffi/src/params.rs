//! The ESMTP parameters of MAIL and RCPT as text for C hosts (`smtps_session_param`,
//! `smtps_conn_param`): one lookup by keyword instead of a struct that grows with every
//! extension.

use smtps_proto::{BodyType, DsnReturn, MailParameters, RcptParameters};

use crate::ffi::write_out;
use crate::view::smtps_str;

/// A command's parameters: keyword (upper case) and value, in a fixed order.
pub(crate) type Params = Vec<(&'static str, String)>;

/// MAIL's parameters (RFC 1870 SIZE, RFC 6152/3030 BODY, RFC 6531 SMTPUTF8, RFC 4954 §5 AUTH,
/// RFC 3461 RET and ENVID, RFC 8689 REQUIRETLS). Values as the RFCs spell them; AUTH and ENVID
/// as sent, in xtext; SMTPUTF8 and REQUIRETLS have an empty value.
pub(crate) fn mail(params: &MailParameters<'_>) -> Params {
    let mut out = Params::new();
    if let Some(size) = params.size {
        out.push(("SIZE", size.to_string()));
    }
    if let Some(body) = params.body {
        let body = match body {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            _ => "BINARYMIME",
        };
        out.push(("BODY", body.to_owned()));
    }
    if params.smtputf8 {
        out.push(("SMTPUTF8", String::new()));
    }
    if let Some(auth) = params.auth {
        out.push(("AUTH", auth.to_owned()));
    }
    if let Some(ret) = params.ret {
        let ret = match ret {
            DsnReturn::Full => "FULL",
            _ => "HDRS",
        };
        out.push(("RET", ret.to_owned()));
    }
    if let Some(envid) = params.envid {
        out.push(("ENVID", envid.to_owned()));
    }
    if params.requiretls {
        out.push(("REQUIRETLS", String::new()));
    }
    out
}

/// RCPT's parameters (RFC 3461 §4.1 NOTIFY: `NEVER`, or `SUCCESS`, `FAILURE`, `DELAY` joined by
/// commas; §4.2 ORCPT: `addr-type;xtext` as sent).
pub(crate) fn rcpt(params: &RcptParameters<'_>) -> Params {
    let mut out = Params::new();
    if let Some(notify) = params.notify {
        out.push(("NOTIFY", notify.to_string()));
    }
    if let Some(orcpt) = params.orcpt {
        out.push(("ORCPT", format!("{};{}", orcpt.addr_type, orcpt.address)));
    }
    out
}

/// The value of `keyword` (case-insensitive) among `params`, as a view into them.
pub(crate) fn find(params: &Params, keyword: &str) -> Option<smtps_str> {
    params
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(keyword))
        .map(|(_, value)| smtps_str::new(value))
}

/// Writes a found value to `out`: false, leaving `out` alone, when there is none or `out` is
/// NULL.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn write_found(value: Option<smtps_str>, out: *mut smtps_str) -> bool {
    match value {
        // SAFETY: NULL-or-writable, as promised by the caller; `write_out` checks NULL.
        Some(value) => unsafe { write_out(out, value) },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use smtps_proto::DsnNotify;

    use super::*;

    #[test]
    fn dsn_values_are_spelled_as_rfc3461_writes_them() {
        let mut params = RcptParameters::default();
        params.notify = Some(DsnNotify::FAILURE);
        assert_eq!(rcpt(&params), vec![("NOTIFY", "FAILURE".to_owned())]);
        let mut mail_params = MailParameters::default();
        mail_params.size = Some(2048);
        mail_params.smtputf8 = true;
        mail_params.ret = Some(DsnReturn::Headers);
        assert_eq!(
            mail(&mail_params),
            vec![
                ("SIZE", "2048".to_owned()),
                ("SMTPUTF8", String::new()),
                ("RET", "HDRS".to_owned())
            ]
        );
        assert!(find(&mail(&mail_params), "smtputf8").is_some());
        assert!(find(&mail(&mail_params), "BODY").is_none());
    }
}
