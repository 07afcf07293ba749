//! xtext (RFC 3461 §4): how XCLIENT attribute values travel (Postfix's XCLIENT_README).

/// Encodes `value`: `!` to `~` stay, except `+` and `=`; every other octet becomes `+HH`.
#[must_use]
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('+');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_escapes_plus_equals_space_controls_and_non_ascii_rfc3461_4() {
        assert_eq!(encode("user@example.org"), "user@example.org");
        assert_eq!(encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(encode("x\r\nMAIL"), "x+0D+0AMAIL");
        assert_eq!(encode("é"), "+C3+A9");
        assert_eq!(encode(""), "");
    }
}
