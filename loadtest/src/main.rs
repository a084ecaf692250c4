//! `tally-loadtest`: the open-loop HTTP load generator (issue 7). Until it is built, the
//! binary says so and exits non-zero rather than pretending to measure anything.

fn main() -> std::process::ExitCode {
    eprintln!("tally-loadtest is not built yet; see the README's status section.");
    std::process::ExitCode::from(2)
}
