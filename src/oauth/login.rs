//! The bot's login (and later the web console's): which provider `[login]` names, the URL that
//! starts a login, completing it (who the person is, whether they may log in), and the checks
//! every later command goes through (the login's age, membership at the provider).
//!
//! ```text
//! /start ─► state {chat, user, provider, PKCE verifier, nonce} ─► provider login
//! /oauth/callback ─► complete(): code → tokens → identity + groups; allowed()?
//!        ─► one-time code {chat, user, identity, groups, credential} (purpose CONFIRM)
//!        ─► the page links https://t.me/<bot>?start=<code>
//! /start <code> from the same Telegram user in the same chat ─► authorized
//! each command ─► check(): expired after session_days? recheck due after recheck_hours?
//! ```
//!
//! The one-time code binds the login to the person who completed it: whoever else sent the
//! first `/start` never sees the code, and a code sent from another account is refused.
//!
//! ItsYou.online (the seed's `[oauth]`) is the provider named `itsyouonline`: identity
//! `itsyouonline:<username>`, groups from the granted `user:memberof:<org>` scopes. It issues
//! no refresh token, so its check is the access token's expiry: once a recheck is due after
//! the token expired, the user logs in again.

use serde_json::{Value, json};

use super::provider::{self, Endpoints, Identity, LoginSecrets, ProviderError, TokenSet};
use crate::config::{Config, OAuthConfig, ProviderConfig, ProviderKind, Secret, TokenAuth};
use crate::store::{AuthorizedUser, Credential};

/// The provider name of ItsYou.online (`[oauth]`).
pub const ITSYOUONLINE: &str = "itsyouonline";

/// The purpose of a Telegram login's pending state (from `/start` to the callback).
pub const PURPOSE: &str = "telegram";

/// The purpose of the one-time code that finishes a Telegram login (`/start <code>`).
pub const CONFIRM: &str = "telegram-confirm";

/// How long the one-time code of a finished login stays valid.
pub const CONFIRM_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// The setting the bot writes its Telegram username to, for `https://t.me/<bot>` links.
pub const BOT_USERNAME_SETTING: &str = "telegram_bot_username";

/// The provider the bot logs people in with.
#[derive(Debug, Clone, Copy)]
pub enum LoginProvider<'a> {
    /// ItsYou.online through `[oauth]`.
    ItsYou(&'a OAuthConfig),
    /// A `[[oauth_provider]]`.
    Provider(&'a ProviderConfig),
}

impl LoginProvider<'_> {
    /// Its name, as stored with the user.
    pub fn name(&self) -> &str {
        match self {
            LoginProvider::ItsYou(_) => ITSYOUONLINE,
            LoginProvider::Provider(p) => &p.name,
        }
    }
}

/// The provider `[login].provider` names (ItsYou.online when it names none).
pub fn login_provider(config: &Config) -> LoginProvider<'_> {
    by_name(
        config,
        config.login.provider.as_deref().unwrap_or(ITSYOUONLINE),
    )
    .unwrap_or(LoginProvider::ItsYou(&config.oauth))
}

/// The provider with this name, if it is still configured.
pub fn by_name<'a>(config: &'a Config, name: &str) -> Option<LoginProvider<'a>> {
    if name == ITSYOUONLINE {
        return Some(LoginProvider::ItsYou(&config.oauth));
    }
    config
        .providers
        .iter()
        .find(|p| p.name == name)
        .map(LoginProvider::Provider)
}

/// ItsYou.online's token endpoint as a provider (HTTP Basic, JSON answers).
fn itsyou(oauth: &OAuthConfig) -> ProviderConfig {
    ProviderConfig {
        name: ITSYOUONLINE.into(),
        kind: ProviderKind::OAuth2,
        client_id: oauth.client_id.clone(),
        client_secret: oauth
            .client_secret
            .clone()
            .unwrap_or_else(|| Secret::new("")),
        token_auth: TokenAuth::Basic,
        authorize_url: format!("{}/v1/oauth/authorize", oauth.itsyouonlinehost),
        access_token_url: format!("{}/v1/oauth/access_token", oauth.itsyouonlinehost),
        user_info_url: String::new(),
        issuer: String::new(),
        api_url: String::new(),
        identity_claim: String::new(),
        groups_claim: String::new(),
        scope: format!("user:memberof:{}", oauth.organization),
        user_info_fields: Vec::new(),
    }
}

/// The URL that starts a login at the login provider, for the pending state `state`.
pub async fn authorize_url(
    config: &Config,
    provider: LoginProvider<'_>,
    state: &str,
    secrets: &LoginSecrets,
) -> Result<url::Url, ProviderError> {
    match provider {
        LoginProvider::ItsYou(oauth) => {
            // Exactly the URL the seed's bot sent.
            let mut url =
                url::Url::parse(&format!("{}/v1/oauth/authorize", oauth.itsyouonlinehost))
                    .map_err(|_| ProviderError::Config("[oauth].itsyouonlinehost".into()))?;
            url.query_pairs_mut()
                .append_pair("response_type", "code")
                .append_pair("client_id", &oauth.client_id)
                .append_pair("redirect_uri", &oauth.redirect_uri)
                .append_pair("state", state)
                .append_pair("scope", &format!("user:memberof:{}", oauth.organization));
            Ok(url)
        }
        LoginProvider::Provider(p) => {
            let http = provider::http()?;
            let endpoints = provider::endpoints(http, p).await?;
            provider::authorize_url(p, &endpoints, &config.login.redirect_uri, state, secrets)
        }
    }
}

/// Whether the callback's `iss` (RFC 9207: the issuer names itself in the authorization
/// response) shows that the code comes from another issuer than the login's OIDC provider (a
/// mix-up attack); an answer without `iss`, or a provider of another kind, is not judged.
pub fn other_issuer(provider: LoginProvider<'_>, iss: Option<&str>) -> bool {
    match (provider, iss) {
        (LoginProvider::Provider(p), Some(iss)) if p.kind == ProviderKind::Oidc => iss != p.issuer,
        _ => false,
    }
}

/// A completed login: who, where from, and what a later check presents to the provider.
#[derive(Debug, Clone)]
pub struct Completed {
    /// Identity, display name and groups.
    pub identity: Identity,
    /// The provider's name.
    pub provider: String,
    /// Access and refresh tokens for the membership checks.
    pub credential: Option<Credential>,
    /// When the access token expires (Unix seconds), if said.
    pub token_expires_at: Option<i64>,
}

/// Completes a login at `provider` with the callback's code.
pub async fn complete(
    config: &Config,
    provider: LoginProvider<'_>,
    code: &str,
    secrets: &LoginSecrets,
) -> Result<Completed, ProviderError> {
    let http = provider::http()?;
    let now = crate::clock::now_secs();
    match provider {
        LoginProvider::ItsYou(oauth) => {
            let p = itsyou(oauth);
            let endpoints = Endpoints {
                authorize: p.authorize_url.clone(),
                token: p.access_token_url.clone(),
                userinfo: None,
                jwks_uri: None,
            };
            let tokens =
                provider::exchange_code(http, &p, &endpoints, code, &oauth.redirect_uri, None)
                    .await?;
            let username = tokens
                .fields
                .get("info")
                .and_then(|info| info["username"].as_str())
                .unwrap_or_default()
                .to_string();
            Ok(Completed {
                identity: Identity {
                    identity: format!("{ITSYOUONLINE}:{username}"),
                    username,
                    groups: itsyou_groups(&tokens),
                },
                provider: ITSYOUONLINE.into(),
                credential: None,
                token_expires_at: tokens.expires_in.map(|s| now + s as i64),
            })
        }
        LoginProvider::Provider(p) => {
            let endpoints = provider::endpoints(http, p).await?;
            let tokens = provider::exchange_code(
                http,
                p,
                &endpoints,
                code,
                &config.login.redirect_uri,
                Some(&secrets.verifier),
            )
            .await?;
            let identity =
                provider::identify(http, p, &endpoints, &tokens, Some(&secrets.nonce)).await?;
            Ok(Completed {
                identity,
                provider: p.name.clone(),
                credential: Some(credential(&tokens, None)),
                token_expires_at: tokens.expires_in.map(|s| now + s as i64),
            })
        }
    }
}

/// The organizations of ItsYou.online's `user:memberof:<org>` scopes (joined by commas or
/// spaces: ItsYou.online writes commas).
fn itsyou_groups(tokens: &TokenSet) -> Vec<String> {
    tokens
        .scope
        .as_deref()
        .unwrap_or_default()
        .split([',', ' '])
        .filter_map(|s| s.trim().strip_prefix("user:memberof:"))
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

/// The tokens a check presents, as stored (JSON); a refresh that issued no new refresh token
/// keeps the old one.
fn credential(tokens: &TokenSet, old_refresh: Option<&str>) -> Credential {
    let refresh = tokens.refresh_token.as_deref().or(old_refresh);
    Credential(json!({"access_token": tokens.access_token, "refresh_token": refresh}).to_string())
}

/// Whether someone in `groups` may log in: `[login].allowed_groups` empty, or one of them.
pub fn allowed(config: &Config, groups: &[String]) -> bool {
    let wanted = &config.login.allowed_groups;
    wanted.is_empty() || groups.iter().any(|g| wanted.contains(g))
}

/// Who may log in, in words (`myorg or myorg/ops`).
pub fn allowed_in_words(config: &Config) -> String {
    config.login.allowed_groups.join(" or ")
}

/// Why a login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It is older than `session_days`.
    Expired,
    /// The provider no longer puts them in an allowed group.
    LeftGroups,
    /// The provider no longer accepts the login's tokens (revoked, expired without refresh).
    Revoked,
    /// Their provider is no longer configured.
    ProviderGone,
}

impl Ended {
    /// What the chat is told.
    pub fn message(&self) -> &'static str {
        match self {
            Ended::Expired => "Your login has expired.",
            Ended::LeftGroups => {
                "You are no longer a member of a group allowed to use this cockpit; you have been logged out."
            }
            Ended::Revoked => {
                "Your login provider no longer confirms your login; you have been logged out."
            }
            Ended::ProviderGone => {
                "The provider you logged in with is no longer configured; you have been logged out."
            }
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Valid, no recheck due.
    Valid,
    /// The provider confirmed membership now: record these groups and tokens.
    Confirmed {
        /// The groups now.
        groups: Vec<String>,
        /// New tokens, if the check refreshed them.
        credential: Option<Credential>,
    },
    /// The provider could not be asked (unreachable, a bad answer): the login stays, and the
    /// next command asks again.
    Unverified(String),
    /// The login is over.
    Ended(Ended),
}

/// When a login made (or last checked) at these times ends, in Unix milliseconds.
pub fn login_expiry(config: &Config, user: &AuthorizedUser) -> i64 {
    user.login_expires_at_ms.unwrap_or_else(|| {
        user.checked_at_ms.unwrap_or(0) + i64::from(config.login.session_days) * 86_400_000
    })
}

/// Checks a logged-in user at `now_ms`: the login's age, then — when `recheck_hours` passed
/// since the last check — membership at the provider.
pub async fn check(config: &Config, user: &AuthorizedUser, now_ms: i64) -> Check {
    if now_ms >= login_expiry(config, user) {
        return Check::Ended(Ended::Expired);
    }
    let due = user.checked_at_ms.unwrap_or(0) + i64::from(config.login.recheck_hours) * 3_600_000;
    if now_ms < due {
        return Check::Valid;
    }
    let Some(provider) = by_name(config, &user.provider) else {
        return Check::Ended(Ended::ProviderGone);
    };
    let found = match provider {
        LoginProvider::ItsYou(_) => {
            if user.token_expires_at.is_none_or(|t| t * 1000 <= now_ms) {
                return Check::Ended(Ended::Revoked);
            }
            Ok((user.groups.clone(), None))
        }
        LoginProvider::Provider(p) => recheck(p, user).await,
    };
    match found {
        Ok((groups, _)) if !allowed(config, &groups) => Check::Ended(Ended::LeftGroups),
        Ok((groups, credential)) => Check::Confirmed { groups, credential },
        Err(ProviderError::Refused(_)) | Err(ProviderError::IdToken(_)) => {
            Check::Ended(Ended::Revoked)
        }
        Err(err) => Check::Unverified(err.to_string()),
    }
}

/// Asks the provider again: with the refresh token when there is one (new tokens), else with
/// the access token. A different identity than the login's is a refusal.
async fn recheck(
    p: &ProviderConfig,
    user: &AuthorizedUser,
) -> Result<(Vec<String>, Option<Credential>), ProviderError> {
    let stored: Value = user
        .credential
        .as_ref()
        .and_then(|c| serde_json::from_str(&c.0).ok())
        .unwrap_or_default();
    let access = stored["access_token"].as_str().unwrap_or_default();
    let refresh_token = stored["refresh_token"].as_str();
    let http = provider::http()?;
    let endpoints = provider::endpoints(http, p).await?;
    let (tokens, credential) = match refresh_token {
        Some(refresh_token) => {
            let tokens = provider::refresh(http, p, &endpoints, refresh_token).await?;
            let new = credential(&tokens, Some(refresh_token));
            (tokens, Some(new))
        }
        None if access.is_empty() => {
            return Err(ProviderError::Refused("no tokens to check with".into()));
        }
        None => (
            TokenSet {
                access_token: access.to_string(),
                ..Default::default()
            },
            None,
        ),
    };
    let identity = provider::identify(http, p, &endpoints, &tokens, None).await?;
    if identity.identity != user.identity {
        return Err(ProviderError::Refused(
            "the tokens are another user's".into(),
        ));
    }
    Ok((identity.groups, credential))
}

/// The pending state's data at `/start`.
pub fn start_data(
    chat_id: i64,
    user_id: i64,
    username: &str,
    provider: &str,
    secrets: &LoginSecrets,
) -> Value {
    json!({
        "chat_id": chat_id, "user_id": user_id, "username": username, "provider": provider,
        "verifier": secrets.verifier, "nonce": secrets.nonce,
    })
}

/// The one-time code's data: who completed the login, bound to the chat and user that started it.
pub fn confirm_data(chat_id: i64, user_id: i64, done: &Completed) -> Value {
    json!({
        "chat_id": chat_id, "user_id": user_id,
        "identity": done.identity.identity, "username": done.identity.username,
        "groups": done.identity.groups, "provider": done.provider,
        "credential": done.credential.as_ref().map(|c| c.0.clone()),
        "token_expires_at": done.token_expires_at,
    })
}

/// Why a `/start <code>` does not log anyone in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The code was made for another Telegram user or chat.
    OtherAccount,
    /// The code's data is damaged.
    Damaged,
}

/// The user a `/start <code>` from `user_id` in `chat_id` authorizes, from the code's data: only
/// the Telegram user and chat that started the login.
pub fn confirmed_user(
    config: &Config,
    data: &Value,
    chat_id: i64,
    user_id: i64,
    now_ms: i64,
) -> Result<AuthorizedUser, Refusal> {
    let (Some(for_chat), Some(for_user), Some(identity), Some(provider)) = (
        data["chat_id"].as_i64(),
        data["user_id"].as_i64(),
        data["identity"].as_str(),
        data["provider"].as_str(),
    ) else {
        return Err(Refusal::Damaged);
    };
    if for_chat != chat_id || for_user != user_id {
        return Err(Refusal::OtherAccount);
    }
    let groups = data["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(AuthorizedUser {
        user_id,
        chat_id,
        username: data["username"].as_str().unwrap_or_default().to_string(),
        current_repo: None,
        token_expires_at: data["token_expires_at"].as_i64(),
        identity: identity.to_string(),
        groups,
        provider: provider.to_string(),
        login_expires_at_ms: Some(now_ms + i64::from(config.login.session_days) * 86_400_000),
        checked_at_ms: Some(now_ms),
        credential: data["credential"]
            .as_str()
            .map(|c| Credential(c.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[oauth]\nclient_id = \"c\"\nclient_secret = \"s\"\norganization = \"myorg\"\n\
             redirect_uri = \"http://127.0.0.1/oauth/callback\"\n[mode]\nprod = false\n{extra}"
        );
        Config::parse(&text).expect("config")
    }

    fn done() -> Completed {
        Completed {
            identity: Identity {
                identity: "itsyouonline:alice".into(),
                username: "alice".into(),
                groups: vec!["myorg".into()],
            },
            provider: ITSYOUONLINE.into(),
            credential: None,
            token_expires_at: Some(10_000),
        }
    }

    #[test]
    fn a_code_authorizes_only_the_user_and_chat_that_started_the_login() {
        let config = config("");
        let data = confirm_data(70, 7, &done());
        assert_eq!(
            confirmed_user(&config, &data, 70, 8, 0),
            Err(Refusal::OtherAccount),
            "another Telegram user"
        );
        assert_eq!(
            confirmed_user(&config, &data, 71, 7, 0),
            Err(Refusal::OtherAccount),
            "another chat"
        );
        let user = confirmed_user(&config, &data, 70, 7, 1_000).expect("the one who started");
        assert_eq!(user.identity, "itsyouonline:alice");
        assert_eq!(user.groups, vec!["myorg".to_string()]);
        assert_eq!(user.login_expires_at_ms, Some(1_000 + 30 * 86_400_000));
        assert_eq!(
            confirmed_user(&config, &json!({}), 70, 7, 0),
            Err(Refusal::Damaged)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn logins_expire_after_session_days_and_are_rechecked_after_recheck_hours() {
        let config = config("[login]\nsession_days = 2\nrecheck_hours = 6\n");
        let start = crate::clock::now_ms();
        let data = confirm_data(70, 7, &done());
        let mut user = confirmed_user(&config, &data, 70, 7, start).expect("user");
        // ItsYou.online's token lives on: a due recheck confirms the groups.
        user.token_expires_at = Some(start / 1000 + 10 * 86_400);
        let hour = std::time::Duration::from_secs(3600);
        tokio::time::advance(5 * hour).await;
        assert_eq!(
            check(&config, &user, crate::clock::now_ms()).await,
            Check::Valid
        );
        tokio::time::advance(2 * hour).await;
        assert_eq!(
            check(&config, &user, crate::clock::now_ms()).await,
            Check::Confirmed {
                groups: vec!["myorg".into()],
                credential: None
            }
        );
        // Its token expired: the recheck ends the login.
        user.token_expires_at = Some(crate::clock::now_secs() - 1);
        assert_eq!(
            check(&config, &user, crate::clock::now_ms()).await,
            Check::Ended(Ended::Revoked)
        );
        user.token_expires_at = Some(start / 1000 + 10 * 86_400);
        tokio::time::advance(41 * hour).await;
        assert_eq!(
            check(&config, &user, crate::clock::now_ms()).await,
            Check::Ended(Ended::Expired),
            "2 days after the login"
        );
    }

    #[tokio::test]
    async fn a_user_whose_group_is_no_longer_allowed_or_whose_provider_is_gone_is_logged_out() {
        let config = config("[login]\nallowed_groups = [\"otherorg\"]\nrecheck_hours = 0\n");
        let now = crate::clock::now_ms();
        let mut user =
            confirmed_user(&config, &confirm_data(1, 1, &done()), 1, 1, now).expect("user");
        user.token_expires_at = Some(now / 1000 + 3600);
        assert_eq!(
            check(&config, &user, now).await,
            Check::Ended(Ended::LeftGroups)
        );
        user.provider = "gone".into();
        assert_eq!(
            check(&config, &user, now).await,
            Check::Ended(Ended::ProviderGone)
        );
    }

    #[test]
    fn itsyou_groups_come_from_memberof_scopes_only() {
        let tokens = TokenSet {
            scope: Some("user:name,user:memberof:myorg, user:memberof:myorg.ops".into()),
            ..Default::default()
        };
        assert_eq!(itsyou_groups(&tokens), vec!["myorg", "myorg.ops"]);
        let config = config("");
        assert!(allowed(&config, &["myorg".into()]));
        assert!(!allowed(&config, &["myorgx".into(), "other".into()]));
    }
}
