//! A real SMTP server for tests ("sink"): it speaks enough of RFC 5321 for the host's mail client to
//! deliver to it over a plain TCP socket, keeps every accepted message, and can be told to refuse DATA
//! with a chosen reply code so tests can drive temporary and permanent failures.
//!
//! It never relays, never offers STARTTLS or AUTH (the client must not need them to talk to it), and
//! keeps nothing on disk: everything lives and dies with the `SmtpSink` value.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The name the sink gives itself in its greeting and EHLO reply.
const NAME: &str = "pitboss-sink";

/// A running SMTP sink; dropping it stops listening and cuts every open connection.
pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    accepted: Mutex<Vec<Mail>>,
    rejected: Mutex<Vec<Mail>>,
    /// `None` answers the final "." with 250.
    reject_with: Mutex<Option<u16>>,
    /// Accept the message, then wait this long before saying so.
    hang_after_accepting: Mutex<Option<std::time::Duration>>,
    next_queue_id: AtomicU64,
}

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The reverse path of MAIL FROM, without the angle brackets (empty for the null sender `<>`).
    pub mail_from: String,
    /// The forward paths of every accepted RCPT TO, without the angle brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The DATA content with dot-stuffing undone, CRLF line ends, up to and including the CRLF that
    /// precedes the terminating ".".
    pub raw: String,
}

impl SmtpSink {
    /// Listens on 127.0.0.1:0 and serves every connection in a spawned task.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP sink");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, shared.clone()));
        SmtpSink { addr, shared, server }
    }

    /// The port to give the mail client.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far (after the final "." got its 250).
    pub fn messages(&self) -> Vec<Mail> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Every message whose final "." was answered with the code set by `reject_with`: proof that
    /// the client did try, which `messages` cannot give.
    pub fn rejected(&self) -> Vec<Mail> {
        self.shared.rejected.lock().unwrap().clone()
    }

    /// Waits (polling every 10 ms) until at least n messages were accepted, panicking after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= deadline {
                panic!(
                    "SMTP sink: expected at least {n} message(s) within {timeout:?}, got {}: {got:#?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// From now on, answer the final "." of DATA with this reply code instead of 250 (e.g. 451 for a
    /// temporary failure, 550 for a permanent one); `None` restores 250.
    pub fn reject_data_with(&self, code: Option<u16>) {
        if let Some(code) = code {
            // A client reads the first digit to tell success, transient and permanent failure apart;
            // anything outside 200..=599 would test the client's parser, not the host.
            assert!((200..600).contains(&code), "not an SMTP reply code: {code}");
        }
        *self.shared.reject_with.lock().unwrap() = code;
    }

    /// From now on, accept each message (it is in `messages()`) but answer its final "." only after
    /// this long — a relay that took the message while its reply is still on the way; `None` answers
    /// at once again.
    pub fn hang_after_accepting(&self, delay: Option<std::time::Duration>) {
        *self.shared.hang_after_accepting.lock().unwrap() = delay;
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // The connection tasks belong to the accept loop's JoinSet, so this cuts them too: a test
        // that drops the sink sees a server that is gone, not one that still finishes old sessions.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: back off rather than spin on the same error.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Reap finished sessions so a long test does not pile them up.
        while sessions.try_join_next().is_some() {}
        let shared = shared.clone();
        sessions.spawn(async move {
            // An I/O error only means the client went away; there is nobody to tell.
            let _ = session(stream, &shared).await;
        });
    }
}

/// Where a session stands in the MAIL / RCPT / DATA sequence.
#[derive(Default)]
struct Transaction {
    greeted: bool,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

impl Transaction {
    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }
}

async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    // One reader for the whole session: a pipelining client may send several commands in one packet,
    // and its buffered bytes must not be lost between commands.
    let mut read = BufReader::new(read);
    let mut tx = Transaction::default();
    reply(&mut write, &format!("220 {NAME} ESMTP ready")).await?;

    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match text.split_once(' ') {
            Some((verb, arg)) => (verb, arg.trim()),
            None => (text, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                tx.reset();
                tx.greeted = true;
                // No STARTTLS and no AUTH: a client that insists on either must fail here, loudly.
                let ehlo =
                    format!("250-{NAME} greets {arg}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING");
                reply(&mut write, &ehlo).await?;
            }
            "HELO" => {
                tx.reset();
                tx.greeted = true;
                reply(&mut write, &format!("250 {NAME}")).await?;
            }
            "MAIL" => {
                let answer = if !tx.greeted {
                    "503 5.5.1 say EHLO or HELO first"
                } else if tx.mail_from.is_some() {
                    "503 5.5.1 nested MAIL command"
                } else {
                    match path_after(arg, "FROM:") {
                        Some(from) => {
                            tx.mail_from = Some(from);
                            "250 2.1.0 sender ok"
                        }
                        None => "501 5.5.4 syntax: MAIL FROM:<address>",
                    }
                };
                reply(&mut write, answer).await?;
            }
            "RCPT" => {
                let answer = if tx.mail_from.is_none() {
                    "503 5.5.1 need MAIL before RCPT"
                } else {
                    match path_after(arg, "TO:") {
                        Some(to) if !to.is_empty() => {
                            tx.rcpt_to.push(to);
                            "250 2.1.5 recipient ok"
                        }
                        _ => "501 5.5.4 syntax: RCPT TO:<address>",
                    }
                };
                reply(&mut write, answer).await?;
            }
            "DATA" => {
                if tx.mail_from.is_none() || tx.rcpt_to.is_empty() {
                    reply(&mut write, "503 5.5.1 need MAIL and RCPT before DATA").await?;
                    continue;
                }
                reply(&mut write, "354 end data with <CR><LF>.<CR><LF>").await?;
                let Some(raw) = read_data(&mut read).await? else {
                    // The client hung up in the middle of DATA: the message was never accepted.
                    return Ok(());
                };
                let mail = Mail {
                    mail_from: tx.mail_from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut tx.rcpt_to),
                    raw,
                };
                let reject_with = *shared.reject_with.lock().unwrap();
                let answer = match reject_with {
                    Some(code) => {
                        shared.rejected.lock().unwrap().push(mail);
                        format!("{code} rejected by the test's SMTP sink")
                    }
                    None => {
                        let id = shared.next_queue_id.fetch_add(1, Ordering::Relaxed) + 1;
                        // Recorded before the 250 goes out, so a client whose send returned finds
                        // its message in `messages()` at once.
                        shared.accepted.lock().unwrap().push(mail);
                        format!("250 2.0.0 ok: queued as SINK{id:06}")
                    }
                };
                let hang = *shared.hang_after_accepting.lock().unwrap();
                if let Some(delay) = hang.filter(|_| reject_with.is_none()) {
                    tokio::time::sleep(delay).await;
                }
                reply(&mut write, &answer).await?;
            }
            "RSET" => {
                tx.reset();
                reply(&mut write, "250 2.0.0 ok").await?;
            }
            "NOOP" => reply(&mut write, "250 2.0.0 ok").await?,
            "QUIT" => {
                reply(&mut write, &format!("221 2.0.0 {NAME} closing connection")).await?;
                write.shutdown().await?;
                return Ok(());
            }
            _ => reply(&mut write, "500 5.5.2 command not recognised").await?,
        }
    }
}

/// Reads DATA lines up to the lone "."; `None` if the connection ended first.
async fn read_data(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Option<String>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(String::from_utf8_lossy(&data).into_owned()));
        }
        // Dot-stuffing (RFC 5321 4.5.2): the client doubled every leading "." so that no line of
        // the message could be taken for the terminator.
        let line = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(line);
    }
}

/// The address in `FROM:<a@b> PARAMS` or `TO:<c@d>`, brackets removed; parameters are ignored.
fn path_after(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_string())
}

async fn reply(write: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> std::io::Result<()> {
    write.write_all(format!("{text}\r\n").as_bytes()).await
}

impl Mail {
    /// A header's value, unfolded (continuation lines joined), case-insensitive name; None if absent.
    /// The first occurrence wins.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers().into_iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every header as (name, unfolded value), in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in self.split().0.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with([' ', '\t']) {
                // Unfolding (RFC 5322 2.2.3) removes only the line break; the whitespace stays.
                if let Some((_, value)) = out.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                out.push((name.trim().to_string(), value.to_string()));
            }
        }
        for (_, value) in &mut out {
            *value = value.trim().to_string();
        }
        out
    }

    /// A header's value with RFC 2047 encoded-words decoded; None if absent.
    pub fn header_decoded(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| decode_words(&v))
    }

    /// The subject decoded if it is an RFC 2047 encoded-word (=?utf-8?b?...?= or =?utf-8?q?...?=,
    /// possibly several words separated by whitespace); plain otherwise.
    pub fn subject(&self) -> Option<String> {
        self.header_decoded("Subject")
    }

    /// The body decoded per Content-Transfer-Encoding (7bit/8bit as is, quoted-printable, base64), as
    /// UTF-8. Line breaks come back as "\n", and the line break the SMTP transport adds before the
    /// terminating "." is not part of it, so a body sent as "Hi\nthere" reads back as "Hi\nthere".
    /// Single-part messages only: a multipart body comes back undecoded.
    pub fn body(&self) -> String {
        let body = self.split().1;
        // Every SMTP client ends the data with CRLF "." CRLF; that first CRLF belongs to the
        // transport, not to what the sender wrote.
        let body = body.strip_suffix("\r\n").or_else(|| body.strip_suffix('\n')).unwrap_or(body);
        let encoding =
            self.header("Content-Transfer-Encoding").map(|e| e.to_ascii_lowercase()).unwrap_or_default();
        let bytes = match encoding.as_str() {
            "quoted-printable" => decode_quoted_printable(body),
            "base64" => {
                let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                lenient_base64().decode(compact).expect("a base64 body that decodes")
            }
            _ => body.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    /// (header section, body), split at the first empty line.
    fn split(&self) -> (&str, &str) {
        let raw = self.raw.as_str();
        if let Some(rest) = raw.strip_prefix("\r\n") {
            return ("", rest);
        }
        match (raw.find("\r\n\r\n"), raw.find("\n\n")) {
            (Some(crlf), lf) if lf.is_none_or(|lf| crlf <= lf) => (&raw[..crlf], &raw[crlf + 4..]),
            (_, Some(lf)) => (&raw[..lf], &raw[lf + 2..]),
            _ => (raw, ""),
        }
    }
}

/// Padding is optional in the wild; the sink is not the place to be strict about it.
fn lenient_base64() -> base64::engine::GeneralPurpose {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// Quoted-printable (RFC 2045 6.7) to bytes; hard line breaks come back as CRLF.
fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Trailing blanks may have been added in transit; the encoder wrote real ones as =20.
        let line = line.trim_end_matches([' ', '\t']);
        let (content, soft_break) = match line.strip_suffix('=') {
            Some(content) => (content, true),
            None => (line, false),
        };
        let bytes = content.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            if bytes[j] == b'='
                && let Some(byte) = bytes.get(j + 1..j + 3).and_then(hex_byte)
            {
                out.push(byte);
                j += 3;
                continue;
            }
            out.push(bytes[j]);
            j += 1;
        }
        if !soft_break && i + 1 < lines.len() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
}

/// Decodes the RFC 2047 encoded-words of an unstructured header value. Whitespace between two
/// adjacent encoded-words is dropped (it is folding, not text), and their bytes are joined before
/// being read as UTF-8, since an encoder may split one character across two words.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_space = String::new();
    let mut after_word = false;
    let mut rest = value;
    while !rest.is_empty() {
        let is_space = rest.starts_with(char::is_whitespace);
        let end = rest.find(|c: char| c.is_whitespace() != is_space).unwrap_or(rest.len());
        let (token, tail) = rest.split_at(end);
        rest = tail;
        if is_space {
            if after_word {
                pending_space.push_str(token);
            } else {
                out.push_str(token);
            }
        } else if let Some(bytes) = decode_word(token) {
            pending_space.clear();
            pending.extend(bytes);
            after_word = true;
        } else {
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut pending)));
            out.push_str(&std::mem::take(&mut pending_space));
            out.push_str(token);
            after_word = false;
        }
    }
    out.push_str(&String::from_utf8_lossy(&pending));
    out.push_str(&pending_space);
    out
}

/// One `=?charset?B|Q?text?=` word to bytes (as UTF-8); `None` if it is not one or cannot be read.
fn decode_word(token: &str) -> Option<Vec<u8>> {
    let inner = token.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let (charset, encoding, text) = (parts.next()?, parts.next()?, parts.next()?);
    // RFC 2231 lets a language ride along: "utf-8*en".
    let charset = charset.split('*').next()?.to_ascii_lowercase();
    let bytes = match encoding {
        "B" | "b" => lenient_base64().decode(text).ok()?,
        "Q" | "q" => {
            let raw = text.as_bytes();
            let mut out = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                match raw[i] {
                    b'_' => out.push(b' '),
                    b'=' => {
                        out.push(raw.get(i + 1..i + 3).and_then(hex_byte)?);
                        i += 2;
                    }
                    b => out.push(b),
                }
                i += 1;
            }
            out
        }
        _ => return None,
    };
    match charset.as_str() {
        "utf-8" | "utf8" | "us-ascii" => Some(bytes),
        // Latin-1 bytes are the first 256 code points, so they re-encode to UTF-8 one by one.
        "iso-8859-1" | "latin1" => {
            Some(bytes.iter().map(|&b| char::from(b)).collect::<String>().into_bytes())
        }
        _ => None,
    }
}
