//! Shared test helpers: start the real `cockpit` binary on free ports and read what it logs.
#![allow(dead_code)]

pub mod api;
pub mod db;
pub mod fake_itsyou;
pub mod fake_telegram;
pub mod inprocess;
pub mod webhook_receiver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cockpit")
}

/// The test P-384 public key as a TOML string value (escaped newlines, as the seed writes it).
pub fn test_public_key_toml() -> String {
    let pem = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/keys/test_p384.pub.pem"),
    )
    .unwrap_or_default();
    pem.trim().replace('\n', "\\n")
}

/// A running cockpit process with its own data directory.
pub struct Cockpit {
    /// The process.
    pub child: Child,
    /// Data dir and config live here.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// Everything it wrote to stderr so far.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:PORT`, once ready.
    pub api: String,
    /// The SMTP receiver's `127.0.0.1:PORT` once ready (`off` when `[mail]` is off).
    pub mail: String,
}

/// A config for tests: API on a free port, data in `dir`, JWTs verified with the test key;
/// the durable state in PostgreSQL when `COCKPIT_TEST_POSTGRES` names a server (a schema of
/// its own per test directory).
pub fn base_config(dir: &Path) -> String {
    format!(
        "[oauth]\nclient_id = \"cockpit-test\"\nclient_secret = \"s3cr3t-client-VALUE\"\n\
         organization = \"myorg\"\nredirect_uri = \"http://127.0.0.1/oauth/callback\"\n\
         jwt_key = \"{}\"\n\n[api.ays]\nhost = \"127.0.0.1\"\nport = 0\n\n\
         [storage]\npath = \"{}\"\n{}\n",
        test_public_key_toml(),
        dir.join("data").display(),
        postgres_storage(dir)
    )
}

/// `url` and `schema` keys for `[storage]` when `COCKPIT_TEST_POSTGRES` is set, else nothing.
pub fn postgres_storage(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let Ok(url) = std::env::var("COCKPIT_TEST_POSTGRES") else {
        return String::new();
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    format!(
        "url = \"{url}\"\nschema = \"t_{:016x}_{}\"\n",
        hasher.finish(),
        std::process::id()
    )
}

/// `config` with `keys` added to its `[api.ays]` section.
pub fn with_api_keys(config: &str, keys: &str) -> String {
    config.replacen("[api.ays]\n", &format!("[api.ays]\n{keys}\n"), 1)
}

impl Cockpit {
    /// Writes `base_config + extra` and starts the binary; waits for `cockpit ready`.
    pub fn start(extra: &str) -> Cockpit {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!("{}{}", base_config(dir.path()), extra);
        Cockpit::start_in(dir, &text)
    }

    /// Starts the binary with this exact config text in `dir`; waits for `cockpit ready`.
    pub fn start_in(dir: tempfile::TempDir, text: &str) -> Cockpit {
        Cockpit::start_logging(dir, text, &default_log())
    }

    /// Like [`Cockpit::start_in`], with `RUST_LOG` set to `rust_log`.
    pub fn start_logging(dir: tempfile::TempDir, text: &str, rust_log: &str) -> Cockpit {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("write config");
        let mut cockpit = Cockpit::spawn_logging(dir, config, rust_log);
        cockpit.wait_ready();
        cockpit
    }

    /// Starts the binary with this exact config text in `dir`, `dir` also its working
    /// directory (for relative paths in the config); waits for `cockpit ready`.
    pub fn start_in_cwd(dir: tempfile::TempDir, text: &str) -> Cockpit {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("write config");
        let mut command = Command::new(bin());
        command.current_dir(dir.path());
        let mut cockpit = Cockpit::spawn_with(dir, config, command, &default_log());
        cockpit.wait_ready();
        cockpit
    }

    /// Starts the binary on an existing config without waiting.
    pub fn spawn(dir: tempfile::TempDir, config: PathBuf) -> Cockpit {
        Cockpit::spawn_logging(dir, config, &default_log())
    }

    /// Starts the binary on an existing config with `RUST_LOG` = `rust_log`, without waiting.
    pub fn spawn_logging(dir: tempfile::TempDir, config: PathBuf, rust_log: &str) -> Cockpit {
        Cockpit::spawn_with(dir, config, Command::new(bin()), rust_log)
    }

    /// Like [`Cockpit::start`], with `api_keys` added to `[api.ays]` and the process's soft
    /// open-file limit set to `soft` (as most systems start services: 1024), whatever the test
    /// runner's own limit is.
    pub fn start_with_fd_limit(api_keys: &str, extra: &str, soft: u64) -> Cockpit {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "{}{}",
            with_api_keys(&base_config(dir.path()), api_keys),
            extra
        );
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("write config");
        let mut command = Command::new(bin());
        // SAFETY: only getrlimit/setrlimit (async-signal-safe) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                limit.rlim_cur = soft.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                Ok(())
            });
        }
        let mut cockpit = Cockpit::spawn_with(dir, config, command, &default_log());
        cockpit.wait_ready();
        cockpit
    }

    /// Starts the binary with this exact config text in `dir` on a PostgreSQL store another
    /// server holds; waits until it stands by (and knows its addresses).
    pub fn start_standby(dir: tempfile::TempDir, text: &str) -> Cockpit {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("write config");
        let mut cockpit = Cockpit::spawn(dir, config);
        cockpit.wait_addresses("standby: another cockpit holds the database");
        cockpit
    }

    /// Waits for `cockpit ready` and reads the addresses from it: a text line (`api=...
    /// mail=...`) or a JSON one (`[log] format = "json"`).
    fn wait_ready(&mut self) {
        self.wait_addresses("cockpit ready");
    }

    /// Waits for a line with `needle` and reads the addresses (`api=`, `mail=`) from it.
    fn wait_addresses(&mut self, needle: &str) {
        let line = self
            .wait_for_log(needle, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no `{needle}`; logs:\n{}", self.log_text()));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let field = |name: &str| {
            json["fields"][name]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{name}=")))
                        .map(str::to_string)
                })
        };
        self.api = format!("http://{}", field("api").unwrap_or("off".into()));
        self.mail = field("mail").unwrap_or("off".into());
    }

    /// Starts `command` (the binary) on an existing config without waiting.
    fn spawn_with(
        dir: tempfile::TempDir,
        config: PathBuf,
        mut command: Command,
        rust_log: &str,
    ) -> Cockpit {
        let mut child = command
            .args(["start", "-c"])
            .arg(&config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cockpit");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("logs").push(line);
            }
        });
        Cockpit {
            child,
            dir,
            config,
            logs,
            api: String::new(),
            mail: String::new(),
        }
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Waits until a log line contains `needle`; returns it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(line) = self
                .logs
                .lock()
                .expect("logs")
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(line.clone());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return self
                    .logs
                    .lock()
                    .expect("logs")
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread drain the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `kill -9`s the process and starts a new one on the same config and data.
    pub fn kill_and_restart(mut self) -> Cockpit {
        self.signal(libc::SIGKILL);
        assert!(self.wait_exit(Duration::from_secs(10)).is_some(), "killed");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tmp"));
        let text = std::fs::read_to_string(&self.config).expect("config");
        Cockpit::start_in(dir, &text)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Cockpit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `RUST_LOG` for test servers: `COCKPIT_TEST_LOG`, else `debug`.
fn default_log() -> String {
    std::env::var("COCKPIT_TEST_LOG").unwrap_or("debug".into())
}

/// Runs the binary with arguments to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    run_in(Path::new("."), args)
}

/// Runs the binary in the working directory `dir` to completion: (exit code, stdout, stderr).
pub fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cockpit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One mail over raw SMTP, `250` to `DATA`: from `from` to `to`, with `body`.
pub async fn smtp_session(stream: &mut tokio::net::TcpStream, from: &str, to: &str, body: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = stream.split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let mut expect = async |code: &str| {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("smtp reply in time")
                .expect("read")
                .expect("a line");
            assert!(line.starts_with(code), "{line}");
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
    };
    expect("220").await;
    for (command, code) in [
        ("EHLO client.example.org\r\n".to_string(), "250"),
        (format!("MAIL FROM:<{from}>\r\n"), "250"),
        (format!("RCPT TO:<{to}>\r\n"), "250"),
        ("DATA\r\n".to_string(), "354"),
        (format!("Subject: disk full\r\n\r\n{body}\r\n.\r\n"), "250"),
        ("QUIT\r\n".to_string(), "221"),
    ] {
        write.write_all(command.as_bytes()).await.expect("write");
        expect(code).await;
    }
}

/// Reads SSE events (`(id, event, data)`) from a response until `stop` says so.
pub async fn sse_until(
    response: reqwest::Response,
    mut stop: impl FnMut(&(String, String, String)) -> bool,
) -> Vec<(String, String, String)> {
    use futures::StreamExt;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim().to_string();
                }
            }
            if event.is_empty() {
                continue; // a keep-alive comment
            }
            let item = (id, event, data);
            let done = stop(&item);
            events.push(item);
            if done {
                return events;
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), body.next()).await {
            Ok(Some(Ok(chunk))) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream ended early: {other:?}; got {events:?}"),
        }
    }
}

/// The one-time code of the `https://t.me/<bot>?start=<code>` link a login page ends with.
pub fn login_code(page: &str) -> String {
    let prefix = "https://t.me/cockpit_test_bot?start=";
    let at = page
        .find(prefix)
        .unwrap_or_else(|| panic!("no t.me link in {page}"));
    page[at + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}
