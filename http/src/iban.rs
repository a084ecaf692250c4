//! IBAN checking (ISO 13616): shape and the mod-97 check digits, which catch every single
//! mistyped character and almost every swap. Country-specific lengths are not checked: the
//! payout rail refuses an IBAN that is well-formed but does not exist.

/// Shortest and longest IBANs in use (Norway 15, Saint Lucia 32; the standard allows 34).
const IBAN_LENGTH_MIN: usize = 15;
const IBAN_LENGTH_MAX: usize = 34;

/// The IBAN in its electronic form (no spaces, upper case), or why it is not one.
pub fn normalize(text: &str) -> Result<String, String> {
    let iban: String = text.chars().filter(|c| *c != ' ').map(|c| c.to_ascii_uppercase()).collect();
    if iban.len() < IBAN_LENGTH_MIN || iban.len() > IBAN_LENGTH_MAX {
        return Err(format!("must be {IBAN_LENGTH_MIN} to {IBAN_LENGTH_MAX} characters"));
    }
    let bytes = iban.as_bytes();
    let shaped = bytes.iter().all(u8::is_ascii_alphanumeric)
        && bytes.iter().take(2).all(u8::is_ascii_uppercase)
        && bytes.iter().skip(2).take(2).all(u8::is_ascii_digit);
    if !shaped {
        return Err("must be a country code, two check digits, then letters and digits".to_owned());
    }
    // Move the first four characters to the end, read letters as 10..35, and take the whole
    // number mod 97 digit by digit: it must be 1.
    let remainder = iban.bytes().cycle().skip(4).take(iban.len()).fold(0_u32, |remainder, byte| {
        let value = if byte.is_ascii_digit() { u32::from(byte - b'0') } else { u32::from(byte - b'A') + 10 };
        if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 }
    });
    if remainder != 1 {
        return Err("check digits do not match".to_owned());
    }
    Ok(iban)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ibans_pass_in_either_form() {
        assert_eq!(normalize("DE89 3704 0044 0532 0130 00"), Ok("DE89370400440532013000".to_owned()));
        assert_eq!(normalize("gb82west12345698765432"), Ok("GB82WEST12345698765432".to_owned()));
        assert_eq!(normalize("NO9386011117947"), Ok("NO9386011117947".to_owned()));
    }

    #[test]
    fn typos_and_bad_shapes_are_refused() {
        assert!(normalize("DE89370400440532013001").is_err(), "one digit off");
        assert!(normalize("DE98370400440532013000").is_err(), "check digits swapped");
        assert!(normalize("1289370400440532013000").is_err(), "no country");
        assert!(normalize("DE8937040044053201300!").is_err());
        assert!(normalize("DE89").is_err());
        assert!(normalize(&format!("DE89{}", "1".repeat(40))).is_err());
    }
}
