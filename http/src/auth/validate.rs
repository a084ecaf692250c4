//! Checks of identity input (emails, names) that the JSON shape alone cannot express. Each
//! returns the message of a field error.

use tally_persistence::users::EMAIL_LENGTH_MAX;

/// Longest first or last name accepted. Generous for any real name; bounded so a name cannot
/// carry a payload.
pub const NAME_LENGTH_MAX: usize = 100;

/// Longest local part of an address (RFC 5321 §4.5.3.1.1).
const EMAIL_LOCAL_LENGTH_MAX: usize = 64;

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no spaces or control
/// characters. Deliverability is not checked: only a confirmation mail could prove it.
pub fn check_email(email: &str) -> Result<(), String> {
    let email = email.trim();
    if email.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if email.chars().count() > EMAIL_LENGTH_MAX {
        return Err(format!("must be at most {EMAIL_LENGTH_MAX} characters"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("must be an email address like name@example.com".to_owned());
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if local.is_empty() || local.chars().count() > EMAIL_LOCAL_LENGTH_MAX || local.contains('@') || !domain_ok {
        return Err("must be an email address like name@example.com".to_owned());
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.chars().count() > NAME_LENGTH_MAX {
        return Err(format!("must be at most {NAME_LENGTH_MAX} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_pass_and_others_say_why() {
        for good in ["a@b.co", "first.last+tag@example.com", "élodie@exemple.fr", " padded@example.com "] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in
            ["", "plain", "@example.com", "a@", "a@b", "a@.b.com", "a@b.com.", "a@b..com", "a b@c.com", "a@b@c.com"]
        {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert!(check_email(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(check_email(&format!("a@{}.com", "b".repeat(260))).is_err());
    }

    #[test]
    fn names_must_be_present_short_and_printable() {
        assert_eq!(check_name("Ada"), Ok(()));
        assert!(check_name("  ").is_err());
        assert!(check_name(&"x".repeat(NAME_LENGTH_MAX + 1)).is_err());
        assert!(check_name("a\u{0}b").is_err());
    }
}
