//! Replies given by C hosts (code, enhanced status, text) turned into verdicts.

use smtps_proto::{Reply, Verdict};

use crate::error::{fail, smtps_result};

/// The verdict for a host's reply: `code` 0 accepts with the default reply; 2xx and 3xx accept
/// with the host's reply; 4xx and 5xx refuse. `accepting_class` is 3 for a DATA start, else 2
/// (`None` leaves the check to the session).
pub(crate) fn verdict(
    code: u16,
    enhanced: Option<&str>,
    text: Option<&str>,
    accepting_class: Option<u8>,
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
    if reply.code().is_negative() {
        return Ok(Verdict::Reject(reply));
    }
    if let Some(expected) = accepting_class
        && reply.code().class() != expected
    {
        return Err(fail(
            smtps_result::InvalidReply,
            format_args!(
                "{code} does not accept this command (expected {expected}xx, or 4xx/5xx to refuse)"
            ),
        ));
    }
    Ok(Verdict::AcceptWith(reply))
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
        assert_eq!(verdict(0, None, None, Some(2)), Ok(Verdict::Accept));
        assert!(matches!(
            verdict(250, Some("2.0.0"), Some("queued"), Some(2)),
            Ok(Verdict::AcceptWith(_))
        ));
        assert!(matches!(
            verdict(550, Some("5.1.1"), None, Some(2)),
            Ok(Verdict::Reject(_))
        ));
        assert_eq!(
            verdict(354, None, None, Some(2)),
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
}
