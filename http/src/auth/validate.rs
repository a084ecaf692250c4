//! Checks of identity input (emails, names) that the JSON shape alone cannot express. Each
//! returns the message of a field error.

use tally_persistence::users::EMAIL_LENGTH_MAX;

/// Longest first or last name accepted. Generous for any real name; bounded so a name cannot
/// carry a payload.
pub const NAME_LENGTH_MAX: usize = 100;

/// Longest local part of an address (RFC 5321 §4.5.3.1.1).
const EMAIL_LOCAL_LENGTH_MAX: usize = 64;

/// A plain address, as the mailer sends to it (`lettre::Address`): a local part (dot-atom, at
/// most 64 characters; UTF-8 allowed), `@`, a dotted domain (an IDN too). Nothing else: no
/// display name, comment, angle brackets, quoted local part or domain literal, no spaces or
/// control characters. What is stored is what mail goes to: an address the mailer would read
/// as another mailbox (`Support<attacker@evil.example>`, `victim(1)@bank.example`) or could not
/// write at all (`first,last@example.com`) is refused here rather than accepted and then
/// mailed elsewhere or never. Deliverability is not checked: only a confirmation mail could
/// prove it.
pub fn check_email(email: &str) -> Result<(), String> {
    parse_email(email).map(|_| ())
}

/// The address `check_email` accepts, as the mailer takes it.
pub fn parse_email(email: &str) -> Result<lettre::Address, String> {
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
    let plain = || "must be a plain email address like name@example.com".to_owned();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(plain());
    };
    // lettre also takes a quoted local part (`"a,b"@example.com`) and a domain literal
    // (`a@[10.0.0.1]`); neither is a plain address.
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('[');
    if local.is_empty() || local.chars().count() > EMAIL_LOCAL_LENGTH_MAX || local.contains('"') || !domain_ok {
        return Err(plain());
    }
    let address: lettre::Address = email.parse().map_err(|_| plain())?;
    // The address must be the whole input, nothing read around or out of it.
    if AsRef::<str>::as_ref(&address) != email {
        return Err(plain());
    }
    Ok(address)
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
        for good in [
            "a@b.co",
            "first.last+tag@example.com",
            "élodie@exemple.fr",
            " padded@example.com ",
            "Alice@Example.COM",
            "o'brien@mail.sub.example.co.uk",
            "x_y-z=1@example.com",
            "ana@exämple.com",
            "ana@xn--exmple-cua.com",
        ] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in
            ["", "plain", "@example.com", "a@", "a@b", "a@.b.com", "a@b.com.", "a@b..com", "a b@c.com", "a@b@c.com"]
        {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        let parsed = parse_email(" padded@example.com ").map(|address| address.to_string());
        assert_eq!(parsed, Ok("padded@example.com".to_owned()));
    }

    /// Only a plain address: nothing the mailer would read as another mailbox, or could not
    /// write (a review found `check_email` accepting all of these).
    #[test]
    fn mailbox_syntax_and_unwritable_addresses_are_refused() {
        for bad in [
            "BankSupport<attacker@evil.example>",
            "<attacker@evil.example>",
            "Bank Support <attacker@evil.example>",
            "victim(1)@bank.example",
            "victim@bank.example(comment)",
            "first,last@example.com",
            "a@b.com,c@d.com",
            "a;b@example.com",
            "a:b@example.com",
            "\"a,b\"@example.com",
            "\"attacker@evil.example\"@bank.example",
            "a@[10.0.0.1].com",
            "a@[10.0.0.1]",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "a\\b@example.com",
        ] {
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
