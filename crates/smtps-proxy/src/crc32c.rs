//! CRC32C (Castagnoli), as RFC 4960 Appendix B computes it for PP2_TYPE_CRC32C.

/// The CRC32C (Castagnoli, reflected polynomial `0x82F63B78`) of `data`: the checksum a
/// PP2_TYPE_CRC32C TLV carries, computed over the whole header with the TLV's value zeroed.
///
/// ```
/// assert_eq!(smtps_proxy::crc32c(b"123456789"), 0xE306_9283);
/// ```
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(data);
    crc.finish()
}

/// A running CRC32C.
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Self {
        Self(!0)
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        for &octet in data {
            let index = (self.0 ^ u32::from(octet)) & 0xff;
            self.0 = TABLE[index as usize] ^ (self.0 >> 8);
        }
    }

    pub(crate) fn finish(&self) -> u32 {
        !self.0
    }
}

const POLYNOMIAL: u32 = 0x82F6_3B78;

static TABLE: [u32; 256] = table();

const fn table() -> [u32; 256] {
    let mut table = [0; 256];
    let mut i: u32 = 0;
    while i < 256 {
        let mut crc = i;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i as usize] = crc;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_of_rfc_3720_and_the_catalogue() {
        // The "check" value of the CRC catalogue, and RFC 3720 B.4's 32-octet vectors.
        let cases: &[(&[u8], u32)] = &[
            (b"", 0),
            (b"123456789", 0xE306_9283),
            (&[0; 32], 0x8A91_36AA),
            (&[0xff; 32], 0x62A8_AB43),
        ];
        for (input, expected) in cases {
            assert_eq!(crc32c(input), *expected, "{input:?}");
        }
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn incremental_update_equals_one_shot() {
        let data: Vec<u8> = (0..=255).collect();
        for split in 0..data.len() {
            let mut crc = Crc32c::new();
            crc.update(&data[..split]);
            crc.update(&data[split..]);
            assert_eq!(crc.finish(), crc32c(&data));
        }
    }
}
