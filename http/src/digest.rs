//! SHA-256 in the forms the API needs: raw (cache keys) and lowercase hex (stored token
//! hashes, request fingerprints). aws-lc-rs computes it, as it does every other primitive.

use aws_lc_rs::digest::{SHA256, digest};

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&sha256(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_string_has_the_well_known_digest() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
