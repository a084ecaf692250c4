//! How `tally serve` logs: `tracing`, one structured line per request (`lib.rs`,
//! `request_id`), to standard error.
//!
//! `TALLY_LOG` selects both the level and the format: comma-separated `EnvFilter` directives
//! (`info`, `tally_http=debug`, ...) plus, optionally, the word `json` or `text`
//! (`TALLY_LOG=info,json`). `TALLY_LOG_FORMAT=json|text` also works and wins when both are
//! given. Defaults: `info`, text.

/// The output format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The filter directives and the format that `TALLY_LOG` and `TALLY_LOG_FORMAT` ask for.
pub fn settings(tally_log: Option<&str>, tally_log_format: Option<&str>) -> (String, LogFormat) {
    let mut format = LogFormat::Text;
    let mut directives = Vec::new();
    for item in tally_log.unwrap_or("").split(',').map(str::trim).filter(|item| !item.is_empty()) {
        match item {
            "json" => format = LogFormat::Json,
            "text" => format = LogFormat::Text,
            directive => directives.push(directive),
        }
    }
    match tally_log_format.map(str::trim) {
        Some("json") => format = LogFormat::Json,
        Some("text") => format = LogFormat::Text,
        _ => {}
    }
    let filter = if directives.is_empty() { "info".to_owned() } else { directives.join(",") };
    (filter, format)
}

/// Installs the global subscriber as `settings` says, from the process environment.
pub fn init_from_env() {
    let (filter, format) =
        settings(std::env::var("TALLY_LOG").ok().as_deref(), std::env::var("TALLY_LOG_FORMAT").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_log_names_the_level_and_optionally_the_format() {
        assert_eq!(settings(None, None), ("info".to_owned(), LogFormat::Text));
        assert_eq!(settings(Some("debug"), None), ("debug".to_owned(), LogFormat::Text));
        assert_eq!(settings(Some("info,json"), None), ("info".to_owned(), LogFormat::Json));
        assert_eq!(settings(Some("json"), None), ("info".to_owned(), LogFormat::Json));
        assert_eq!(
            settings(Some("warn, tally_http=debug ,json"), None),
            ("warn,tally_http=debug".to_owned(), LogFormat::Json)
        );
        assert_eq!(settings(Some("info,json"), Some("text")), ("info".to_owned(), LogFormat::Text));
        assert_eq!(settings(Some("warn"), Some("json")), ("warn".to_owned(), LogFormat::Json));
    }
}
