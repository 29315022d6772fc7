//! A real OpenID Connect provider: panva's `oidc-provider` (Node.js), run from `tests/oidc/`
//! on a free loopback port, and a browser that logs in through its forms.
//!
//! The npm packages are installed by `scripts/test.sh` (`npm ci` in `tests/oidc/`); when they
//! are missing, [`RealOidc::start`] runs `npm ci` itself. Without Node.js and npm the test fails
//! and says how to install them: it is never skipped.
//!
//! Accounts (`tests/oidc/provider.mjs`): `alice` (groups `myorg`, `/myorg/ops`), `carol`
//! (`myorg`, `myorg/admins`), `mallory` (`elsewhere`); any password.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The provider's directory.
fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// `npm ci` once per test process when `node_modules` lacks the provider.
fn install() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let needs = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .map_err(|e| {
                    format!(
                        "`{tool} --version` failed ({e}): the real OpenID Connect provider test \
                         needs Node.js (18 or later) and npm; on Debian: `apt-get install nodejs \
                         npm` (scripts/test.sh does it when run as root)"
                    )
                })
                .map(|_| ())
        };
        needs("node")?;
        if dir()
            .join("node_modules/oidc-provider/package.json")
            .exists()
        {
            return Ok(());
        }
        needs("npm")?;
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir())
            .output()
            .map_err(|e| format!("npm ci in tests/oidc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm ci in tests/oidc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(why) = result {
        panic!("{why}");
    }
}

/// The running provider; stopped when dropped.
pub struct RealOidc {
    child: Child,
    /// Held so that the provider exits on its own when this process dies (its stdin closes).
    _stdin: Option<ChildStdin>,
    /// What it wrote to stderr.
    stderr: Arc<Mutex<Vec<String>>>,
    /// The issuer: `http://127.0.0.1:PORT`.
    pub url: String,
}

impl RealOidc {
    /// Starts the provider with one client: `client_id`/`client_secret`, the one redirect URI
    /// `redirect_uri`, authenticating at the token endpoint with `token_auth`.
    pub fn start(
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        token_auth: &str,
    ) -> RealOidc {
        install();
        let mut child = Command::new("node")
            .arg(dir().join("provider.mjs"))
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", client_secret)
            .env("REDIRECT_URI", redirect_uri)
            .env("TOKEN_AUTH", token_auth)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node tests/oidc/provider.mjs: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().expect("stderr").push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ready ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let stdin = child.stdin.take();
        let mut provider = RealOidc {
            child,
            _stdin: stdin,
            stderr,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => provider.url = url,
            Err(_) => panic!(
                "the OIDC provider did not start within 20 s; its stderr:\n{}",
                provider.stderr_text()
            ),
        }
        provider
    }

    /// Revokes `token` at the provider's revocation endpoint (RFC 7009) as the client.
    pub async fn revoke(&self, client_id: &str, client_secret: &str, token: &str) {
        let answer = reqwest::Client::new()
            .post(format!("{}/token/revocation", self.url))
            .basic_auth(client_id, Some(client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .expect("revocation");
        assert_eq!(answer.status().as_u16(), 200, "revocation refused");
    }

    /// What the provider wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr").join("\n")
    }
}

impl Drop for RealOidc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser with cookies that follows the provider's redirects and stops at the first one to
/// `stop_at` (cockpit's `/oauth/callback` as the provider knows it).
pub fn browser(stop_at: &str) -> reqwest::Client {
    let stop_at = reqwest::Url::parse(stop_at).expect("stop_at");
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            let url = attempt.url();
            if url.origin() == stop_at.origin() && url.path() == stop_at.path() {
                attempt.stop()
            } else if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
        .build()
        .expect("browser")
}

/// The value of `name="..."`-style attribute `attr` in `tag`.
fn attribute(tag: &str, attr: &str) -> Option<String> {
    let at = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    let end = tag[at..].find('"')? + at;
    Some(tag[at..end].replace("&amp;", "&"))
}

/// Logs in as `account` in `browser` from the authorize `link`: submits the provider's login
/// form, then its consent form, as a person would. Returns where the provider finally sent the
/// browser (cockpit's callback with `code`, `state` and `iss`), or panics with the page it
/// stopped on.
pub async fn log_in(browser: &reqwest::Client, link: &str, account: &str) -> reqwest::Url {
    let mut response = browser.get(link).send().await.expect("authorize");
    for _ in 0..4 {
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("location");
            return response.url().join(location).expect("redirect URL");
        }
        let base = response.url().clone();
        let status = response.status();
        let page = response.text().await.expect("page");
        assert_eq!(
            status.as_u16(),
            200,
            "the provider answered {status}: {page}"
        );
        let form = page
            .find("<form")
            .map(|at| &page[at..])
            .and_then(|rest| rest.find('>').map(|end| &rest[..end]))
            .unwrap_or_else(|| panic!("no form on the provider's page: {page}"));
        let action = attribute(form, "action").expect("form action");
        let fields: Vec<(&str, &str)> = if page.contains("name=\"prompt\" value=\"login\"") {
            vec![("prompt", "login"), ("login", account), ("password", "any")]
        } else if page.contains("name=\"prompt\" value=\"consent\"") {
            vec![("prompt", "consent")]
        } else {
            panic!("neither a login nor a consent form: {page}");
        };
        response = browser
            .post(base.join(&action).expect("action URL"))
            .form(&fields)
            .send()
            .await
            .expect("submit");
    }
    panic!("the provider never sent the browser back");
}
