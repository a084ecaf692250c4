//! What the generator's test files share: its configuration as a command line would give it.

#![allow(clippy::unwrap_used)]

use clap::Parser;
use tally_loadtest::cli::Config;

/// The generator's configuration for `base_url` (20 accounts, quiet) with `extra` arguments.
pub fn config(base_url: &str, extra: &[&str]) -> Config {
    let mut args = vec![
        "tally-loadtest",
        "--base-url",
        base_url,
        "--admin-email",
        "admin@example.com",
        "--admin-password",
        "Admin-pass-1!",
        "--accounts",
        "20",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).unwrap()
}
