//! The seed's bottle example, in Rust: an app whose `/test` page is only for users logged in
//! through a central OAuth2 server (a cockpit with `[oauth_proxy]`).
//!
//! ```text
//! cargo run --example protected_app -- --proxy http://127.0.0.1:5000/oauth \
//!     --listen 127.0.0.1:8080 --public-url http://127.0.0.1:8080
//! ```
//!
//! The cockpit must list `http://127.0.0.1:8080/test/callback` in `[oauth_proxy].allowed_redirects`.
//! `--verify-key` (the 64 hex characters of `<proxy>/key`) and `--provider` default to what the
//! proxy publishes; pass them explicitly in production so that the key is not fetched over the
//! network at start.
//!
//! Routes: `/test` (protected: shows the user info), `/test/login` (links per provider, or
//! `?provider=` to start a login), `/test/callback` (where the proxy comes back), `/test/logout`.

use std::collections::HashMap;

use clap::Parser;
use cockpit::oauth::client::{self, OAuthApp, ProxyClientConfig, Session, User, escape_html};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

/// The app's routes; `callback_url` is this app's public `/test/callback` URL.
pub fn routes(app: OAuthApp, callback_url: String) -> BoxedFilter<(Response,)> {
    let test = warp::path!("test")
        .and(warp::get())
        .and(app.login_required())
        .map(|user: User| {
            let info = serde_json::to_string_pretty(&user.info).unwrap_or_default();
            warp::reply::html(format!(
                "<!doctype html><title>Protected</title><h1>Hello</h1>\
                 <p>Logged in through {}.</p><pre id=\"user_info\">{}</pre>\
                 <p><a href=\"/test/logout\">Log out</a></p>",
                escape_html(&user.provider),
                escape_html(&info)
            ))
            .into_response()
        })
        .boxed();
    let login_app = app.clone();
    let login = warp::path!("test" / "login")
        .and(warp::get())
        .and(app.session())
        .and(warp::query::<HashMap<String, String>>())
        .map(move |session: Session, query: HashMap<String, String>| {
            let next = query.get("next_url").map(String::as_str);
            if let Some(provider) = query.get("provider") {
                return login_app.login(&session, provider, &callback_url, next);
            }
            let links: String = login_app
                .providers()
                .iter()
                .map(|p| {
                    let mut pairs = vec![("provider", p.as_str())];
                    if let Some(next) = next {
                        pairs.push(("next_url", next));
                    }
                    let href = serde_urlencoded_pairs(&pairs);
                    format!(
                        "<li><a href=\"/test/login?{}\">{}</a></li>",
                        escape_html(&href),
                        escape_html(p)
                    )
                })
                .collect();
            warp::reply::html(format!(
                "<!doctype html><title>Log in</title><h1>Log in with</h1><ul>{links}</ul>"
            ))
            .into_response()
        })
        .boxed();
    let callback_app = app.clone();
    let callback = warp::path!("test" / "callback")
        .and(warp::get())
        .and(app.session())
        .and(warp::query::<HashMap<String, String>>())
        .map(move |session: Session, query: HashMap<String, String>| {
            match callback_app.callback(&session, &query) {
                Ok(done) => done.redirect(),
                Err(err) => err.into_response(),
            }
        })
        .boxed();
    let logout_app = app.clone();
    let logout = warp::path!("test" / "logout")
        .and(warp::get())
        .and(app.session())
        .map(move |session: Session| logout_app.logout(&session, "/test/login"))
        .boxed();
    test.or(login)
        .unify()
        .or(callback)
        .unify()
        .or(logout)
        .unify()
        .recover(client::recover)
        .unify()
        .boxed()
}

/// `a=b&c=d`, form-encoded.
fn serde_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    oauth2::url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Command line of the example.
#[derive(Parser)]
struct Args {
    /// The central OAuth server's base URL (`<cockpit>/oauth`).
    #[arg(long, default_value = "http://127.0.0.1:5000/oauth")]
    proxy: String,
    /// Where this app listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// This app's public base URL; the callback is `<public-url>/test/callback`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    public_url: String,
    /// The proxy's verify key (64 hex characters); fetched from `<proxy>/key` when absent.
    #[arg(long)]
    verify_key: Option<String>,
    /// Providers to offer (repeatable); fetched from `<proxy>/providers` when absent.
    #[arg(long = "provider")]
    providers: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("protected_app: {message}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Fetches `url` as text, with a message that says what to do when cockpit is not there.
async fn fetch(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let answer = async { http.get(url).send().await?.error_for_status()?.text().await };
    answer.await.map_err(|err| {
        format!(
            "cannot fetch {url}: {err}\n  Is cockpit running with an [oauth_proxy] section? \
             Start it first (see README, \"Central OAuth2 login server\"), or pass --verify-key \
             and --provider."
        )
    })
}

async fn run(args: Args) -> Result<(), String> {
    let proxy = args.proxy.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let verify_key = match args.verify_key {
        Some(key) => key,
        None => {
            eprintln!("fetching the verify key from {proxy}/key (pass --verify-key in production)");
            fetch(&http, &format!("{proxy}/key")).await?
        }
    };
    let providers: Vec<String> = if args.providers.is_empty() {
        let url = format!("{proxy}/providers");
        let text = fetch(&http, &url).await?;
        serde_json::from_str(&text)
            .map_err(|err| format!("{url} did not answer a JSON list of providers: {err}"))?
    } else {
        args.providers
    };
    let app = OAuthApp::new(
        ProxyClientConfig {
            url: proxy.clone(),
            verify_key: verify_key.trim().to_string(),
            providers,
        },
        "/test/login",
    )
    .map_err(|err| {
        format!(
            "the verify key is not usable: {err}\n  It must be the 64 hex characters that \
             {proxy}/key answers (an empty value means cockpit was not running when it was fetched)."
        )
    })?;
    let callback_url = format!("{}/test/callback", args.public_url.trim_end_matches('/'));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening address: {err}"))?;
    eprintln!("protected app on http://{addr}/test (callback {callback_url})");
    warp::serve(routes(app, callback_url))
        .incoming(listener)
        .graceful(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .run()
        .await;
    Ok(())
}
