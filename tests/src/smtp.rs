//! A real SMTP receiver for tests: a TCP listener on `127.0.0.1:0` speaking enough of RFC 5321
//! for a client such as lettre (`EHLO`/`HELO`, `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`),
//! keeping every message it receives so a test can read the code a server mailed. No TLS, no
//! authentication: the server under test is pointed at `smtp://127.0.0.1:<port>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message (headers and body) with dot-stuffing undone and CRLF line ends.
    pub data: String,
}

impl Received {
    /// The first run of exactly six ASCII digits in the body (after the headers): the code.
    pub fn code(&self) -> Option<String> {
        let body = self.data.split_once("\r\n\r\n").map_or(self.data.as_str(), |(_, body)| body);
        let bytes = body.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at].is_ascii_digit() {
                let end = bytes[at..].iter().position(|byte| !byte.is_ascii_digit()).map_or(bytes.len(), |n| at + n);
                if end - at == 6 {
                    return Some(body[at..end].to_owned());
                }
                at = end;
            } else {
                at += 1;
            }
        }
        None
    }

    pub fn subject(&self) -> Option<String> {
        self.data.lines().find_map(|line| line.strip_prefix("Subject: ")).map(str::to_owned)
    }
}

/// The receiver; it stops when dropped.
pub struct SmtpReceiver {
    pub port: u16,
    messages: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpReceiver {
    pub async fn start() -> SmtpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP receiver");
        let port = listener.local_addr().expect("address").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&messages);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let _ = session(stream, kept).await;
                });
            }
        });
        SmtpReceiver { port, messages, task }
    }

    /// `smtp://127.0.0.1:<port>`, for `TALLY_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().expect("messages").clone()
    }

    /// Messages to `to` so far.
    pub fn messages_to(&self, to: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|message| message.to.iter().any(|rcpt| rcpt.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// Waits (up to 10 s) until `to` has received more than `seen` messages; returns the newest.
    pub async fn next_to(&self, to: &str, seen: usize) -> Received {
        for _ in 0..1_000 {
            let messages = self.messages_to(to);
            if messages.len() > seen {
                return messages.last().cloned().expect("a message");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no message #{} to {to} within 10 s; received: {:#?}", seen + 1, self.messages());
    }

    /// The code of the next message to `to` after the `seen` earlier ones.
    pub async fn next_code(&self, to: &str, seen: usize) -> String {
        let message = self.next_to(to, seen).await;
        message.code().unwrap_or_else(|| panic!("no 6-digit code in {}", message.data))
    }
}

/// The address inside `<...>` of a `MAIL FROM:`/`RCPT TO:` argument.
fn path(argument: &str) -> String {
    let start = argument.find('<').map_or(0, |at| at + 1);
    let end = argument[start..].find('>').map_or(argument.len(), |at| start + at);
    argument[start..end].to_owned()
}

async fn session(stream: TcpStream, kept: Arc<Mutex<Vec<Received>>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 tally-test ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let argument = command.get(verb.len()..).unwrap_or("").trim();
        match verb.as_str() {
            "EHLO" => write.write_all(b"250-tally-test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n").await?,
            "HELO" => write.write_all(b"250 tally-test\r\n").await?,
            "MAIL" => {
                from = path(argument);
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "RCPT" => {
                to.push(path(argument));
                write.write_all(b"250 OK\r\n").await?;
            }
            "DATA" => {
                write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // RFC 5321 §4.5.2: a leading dot was doubled by the sender.
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                kept.lock().expect("messages").push(Received {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                write.write_all(b"250 OK queued\r\n").await?;
            }
            "RSET" => {
                from.clear();
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 command not implemented\r\n").await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_the_first_six_digit_run_of_the_body() {
        let message = Received {
            from: String::new(),
            to: Vec::new(),
            data: "Date: 2026 12 01\r\nSubject: x\r\n\r\nYour code is 042137.\r\nIt works for 15 minutes.\r\n"
                .to_owned(),
        };
        assert_eq!(message.code().as_deref(), Some("042137"));
        assert_eq!(message.subject().as_deref(), Some("x"));
    }
}
