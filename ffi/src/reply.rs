//! Replies given by C hosts (code, enhanced status, text) turned into verdicts.

use smtps_proto::{DecisionKind, Reply, Verdict};

use crate::error::{fail, smtps_result};

/// The verdict for a host's reply: `code` 0 accepts with the default reply; 2xx and 3xx accept
/// with the host's reply; 4xx and 5xx refuse. With `kind`, the code must be one RFC 5321
/// §4.3.2 allows for that command (`220` to greet, `354` for DATA, ...); without, the session
/// checks it when the verdict is applied.
pub(crate) fn verdict(
    code: u16,
    enhanced: Option<&str>,
    text: Option<&str>,
    kind: Option<DecisionKind>,
) -> Result<Verdict, smtps_result> {
    if code == 0 {
        return Ok(Verdict::Accept);
    }
    let class = code / 100;
    let default_text = match class {
        2 => "OK",
        3 => "Go ahead",
        4 => "Temporary failure, try again later",
        _ => "Refused",
    };
    let Some(reply) = Reply::from_parts(code, enhanced, text.unwrap_or(default_text)) else {
        return Err(fail(
            smtps_result::InvalidReply,
            format_args!(
                "{code} {} is not a valid reply (code 2xx-5xx, status x.y.z of the same class)",
                enhanced.unwrap_or("")
            ),
        ));
    };
    let negative = reply.code().is_negative();
    if let Some(kind) = kind
        && !(if negative {
            kind.refuses(code)
        } else {
            kind.accepts(code)
        })
    {
        return Err(fail(
            smtps_result::InvalidReply,
            format_args!(
                "{code} does not answer {kind:?} (RFC 5321 4.3.2: {})",
                expected_codes(kind)
            ),
        ));
    }
    Ok(if negative {
        Verdict::Reject(reply)
    } else {
        Verdict::AcceptWith(reply)
    })
}

/// The codes a decision takes, for error messages.
fn expected_codes(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::Connect => "220 greets, 554 or 421 refuse",
        DecisionKind::Auth => "235 accepts, 4xx or 5xx refuse",
        DecisionKind::Data => "354 accepts, 4xx or 5xx refuse",
        DecisionKind::Rcpt => "250 or 251 accept, 4xx or 5xx refuse",
        _ => "250 accepts, 4xx or 5xx refuse",
    }
}

/// A fixed reply of this crate (known-good parts).
pub(crate) fn fixed(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply::from_parts(code, Some(enhanced), text)
        .unwrap_or_else(|| Reply::new(smtps_proto::ReplyCode::LOCAL_ERROR, None, text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_verdicts() {
        let rcpt = Some(DecisionKind::Rcpt);
        assert_eq!(verdict(0, None, None, rcpt), Ok(Verdict::Accept));
        assert!(matches!(
            verdict(250, Some("2.0.0"), Some("queued"), rcpt),
            Ok(Verdict::AcceptWith(_))
        ));
        assert!(matches!(
            verdict(550, Some("5.1.1"), None, rcpt),
            Ok(Verdict::Reject(_))
        ));
        assert_eq!(
            verdict(354, None, None, rcpt),
            Err(smtps_result::InvalidReply)
        );
        assert_eq!(
            verdict(250, Some("5.0.0"), None, None),
            Err(smtps_result::InvalidReply)
        );
        assert_eq!(
            verdict(999, None, None, None),
            Err(smtps_result::InvalidReply)
        );
    }

    #[test]
    fn the_greeting_is_220_and_refused_only_with_554_or_421() {
        let connect = Some(DecisionKind::Connect);
        assert_eq!(
            verdict(250, None, None, connect),
            Err(smtps_result::InvalidReply)
        );
        assert_eq!(
            verdict(550, None, None, connect),
            Err(smtps_result::InvalidReply)
        );
        assert!(matches!(
            verdict(220, None, Some("mx ready"), connect),
            Ok(Verdict::AcceptWith(_))
        ));
        assert!(matches!(
            verdict(554, None, None, connect),
            Ok(Verdict::Reject(_))
        ));
    }
}
