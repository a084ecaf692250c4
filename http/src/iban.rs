//! IBAN checking (ISO 13616) with `iban_validate`: the mod-97 check digits, which catch every
//! single mistyped character and almost every swap, and the country's own length and format
//! from the SWIFT IBAN registry, so an IBAN of a country that has none, or of the wrong length
//! for its country, is refused before money is held for a payee that cannot exist. Check
//! digits `00`, `01` and `99` are refused too: ISO 7064 never computes them, and `99` passes
//! mod 97 wherever `02` does, so one account could be saved twice under two spellings.

use iban::{Iban, IbanLike, ParseBaseIbanError, ParseIbanError};

/// The IBAN in its electronic form (no spaces, upper case), or why it is not one.
pub fn normalize(text: &str) -> Result<String, String> {
    let electronic: String = text.chars().filter(|c| *c != ' ').map(|c| c.to_ascii_uppercase()).collect();
    if let Some(digits) = electronic.get(2..4)
        && let Ok(digits) = digits.parse::<u8>()
        && !(2..=98).contains(&digits)
    {
        return Err("check digits must be 02 to 98".to_owned());
    }
    let iban: Iban = electronic.parse().map_err(|error| match error {
        ParseIbanError::InvalidBaseIban { source: ParseBaseIbanError::InvalidChecksum } => {
            "check digits do not match".to_owned()
        }
        ParseIbanError::InvalidBaseIban { source: ParseBaseIbanError::InvalidFormat } => {
            "must be a country code, two check digits, then 11 to 30 letters and digits".to_owned()
        }
        ParseIbanError::UnknownCountry(base) => {
            format!("{} is not a country in the IBAN registry", &base.electronic_str()[..2])
        }
        ParseIbanError::InvalidBban(base) => {
            format!("is not the length and format of an IBAN of {}", &base.electronic_str()[..2])
        }
    })?;
    Ok(iban.electronic_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ibans_pass_in_either_form() {
        assert_eq!(normalize("DE89 3704 0044 0532 0130 00"), Ok("DE89370400440532013000".to_owned()));
        assert_eq!(normalize("gb82west12345698765432"), Ok("GB82WEST12345698765432".to_owned()));
        assert_eq!(normalize("NO9386011117947"), Ok("NO9386011117947".to_owned()));
        assert_eq!(normalize("GB33BUKB20201555555555"), Ok("GB33BUKB20201555555555".to_owned()));
    }

    #[test]
    fn typos_and_bad_shapes_are_refused() {
        assert_eq!(normalize("DE89370400440532013001"), Err("check digits do not match".to_owned()), "one digit off");
        assert!(normalize("DE98370400440532013000").is_err(), "check digits swapped");
        assert!(normalize("1289370400440532013000").is_err(), "no country");
        assert!(normalize("DE8937040044053201300!").is_err());
        assert!(normalize("DE89").is_err());
        assert!(normalize(&format!("DE89{}", "1".repeat(40))).is_err());
    }

    /// Each passes mod 97 (found by a review: all were saved as beneficiaries).
    #[test]
    fn ibans_that_cannot_exist_are_refused_though_their_check_digits_match() {
        for (iban, why) in [
            ("XX4212345678901234", "XX is not a country in the IBAN registry"),
            ("ZZ241111111111111", "ZZ is not a country in the IBAN registry"),
            ("DE51370400440532013000123", "is not the length and format of an IBAN of DE"),
        ] {
            assert_eq!(normalize(iban), Err(why.to_owned()), "{iban}");
        }
        // The same German account under the check digits ISO never computes: 02 and 99 are
        // both 2 mod 97.
        assert_eq!(normalize("DE00370400441000000026"), Err("check digits must be 02 to 98".to_owned()));
        assert_eq!(normalize("DE99370400441000000087"), Err("check digits must be 02 to 98".to_owned()));
    }
}
