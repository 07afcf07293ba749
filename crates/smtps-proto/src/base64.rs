//! Base64 (RFC 4648 §4) as SASL uses it in SMTP AUTH (RFC 4954 §4): strict, padded, no
//! whitespace.

#[cfg(test)]
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes strict padded base64 into `out` (cleared first). `None` if the text is not base64.
pub(crate) fn decode(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    out.reserve(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (index, quad) in text.chunks_exact(4).enumerate() {
        let last = index + 1 == chunks;
        let pad = if last {
            quad.iter().rev().take_while(|&&b| b == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return None;
        }
        let mut acc: u32 = 0;
        for &b in &quad[..4 - pad] {
            acc = (acc << 6) | u32::from(value(b)?);
        }
        acc <<= 6 * pad;
        let bytes = acc.to_be_bytes();
        // Unused bits of a padded quantum must be zero (RFC 4648 §3.5, canonical encoding).
        match pad {
            0 => out.extend_from_slice(&bytes[1..4]),
            1 if bytes[3] == 0 => out.extend_from_slice(&bytes[1..3]),
            2 if bytes[2] == 0 && bytes[3] == 0 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(())
}

/// Encodes `data` as padded base64, appending to `out`.
#[cfg(test)]
pub(crate) fn encode(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let mut buf = [0u8; 3];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = (u32::from(buf[0]) << 16) | (u32::from(buf[1]) << 8) | u32::from(buf[2]);
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

fn value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_test_vectors_round_trip() {
        let vectors: [(&[u8], &[u8]); 7] = [
            (b"", b""),
            (b"f", b"Zg=="),
            (b"fo", b"Zm8="),
            (b"foo", b"Zm9v"),
            (b"foob", b"Zm9vYg=="),
            (b"fooba", b"Zm9vYmE="),
            (b"foobar", b"Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            let mut out = Vec::new();
            encode(plain, &mut out);
            assert_eq!(out, encoded);
            assert_eq!(decode(encoded, &mut out), Some(()));
            assert_eq!(out, plain);
        }
    }

    #[test]
    fn rejects_malformed_base64() {
        let mut out = Vec::new();
        for bad in [
            &b"Zg="[..],
            b"Z===",
            b"Zm9v\r\n",
            b"Zh==",
            b"Zm9=Zm9v",
            b"****",
            b"Zm 9",
        ] {
            assert_eq!(
                decode(bad, &mut out),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
