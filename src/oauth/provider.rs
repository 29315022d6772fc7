//! Talking to one `[[oauth_provider]]`: its endpoints (OIDC discovery), the authorize URL, the
//! token endpoint (either client authentication method, JSON or form-encoded answers), and who
//! the user is — identity and groups — for each kind of provider:
//!
//! - `github`: `GET {api_url}/user` (`login`), `/user/orgs` (organizations) and `/user/teams`
//!   (`org/team` slugs); identity `github:<login>`.
//! - `oidc`: the ID token verified with the issuer's JWKS (signature, `iss`, `aud`, `exp`,
//!   `nonce`); identity `<name>:<identity_claim>` (default `sub`), groups from `groups_claim`
//!   (default `groups`, taken from the user info endpoint when the ID token lacks it).
//! - `oauth2`: `GET user_info_url`; identity `<name>:<identity_claim>` (default the first of
//!   `sub`, `login`, `username`, `id`), groups from `groups_claim`.
//!
//! The oauth2 crate is not used for the token endpoint: it reads only JSON answers, and GitHub
//! answers form-encoded unless asked. Every request has a timeout and every answer a size
//! bound; no error message carries a token, a code or the client secret.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{ProviderConfig, ProviderKind, TokenAuth};

/// The largest answer read from a provider.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// GitHub lists at most this many organizations and teams per page; one page is read.
const GITHUB_PAGE: usize = 100;

/// Why talking to a provider failed. Messages name the provider's endpoint, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or did not answer in time.
    #[error("the provider's {0} is unreachable")]
    Unreachable(&'static str),
    /// The provider refused (`invalid_grant`, `invalid_client`, a 401...): the OAuth error code.
    #[error("the provider refused: {0}")]
    Refused(String),
    /// The provider answered something that is not what the protocol says.
    #[error("unexpected answer from the provider's {0}")]
    BadAnswer(String),
    /// The ID token failed verification.
    #[error("the ID token is not valid: {0}")]
    IdToken(String),
    /// The provider's config cannot work (a bad URL).
    #[error("the provider is misconfigured: {0}")]
    Config(String),
}

/// The endpoints of a provider, configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Where the browser goes to log in.
    pub authorize: String,
    /// Where codes and refresh tokens are exchanged.
    pub token: String,
    /// The user info endpoint, if any.
    pub userinfo: Option<String>,
    /// The issuer's key set (OIDC).
    pub jwks_uri: Option<String>,
}

/// What a token endpoint answered.
#[derive(Clone, Default)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The refresh token, if one was issued.
    pub refresh_token: Option<String>,
    /// Seconds the access token lives, if said.
    pub expires_in: Option<u64>,
    /// The granted scope, as sent (space or comma separated).
    pub scope: Option<String>,
    /// The OIDC ID token.
    pub id_token: Option<String>,
    /// Every field of the answer (ItsYou.online's `info`).
    pub fields: Map<String, Value>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSet(***)")
    }
}

/// Who logged in, as the provider says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `github:alice`, `keycloak:3f2a...`.
    pub identity: String,
    /// A name to greet them with.
    pub username: String,
    /// Their groups: organizations, `org/team`, or the OIDC groups claim.
    pub groups: Vec<String>,
}

/// The secrets one login carries from its start to its callback: the PKCE verifier and the
/// OIDC nonce, both random.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginSecrets {
    /// The PKCE code verifier (its S256 challenge goes into the authorize URL).
    pub verifier: String,
    /// The OIDC nonce, echoed in the ID token.
    pub nonce: String,
}

impl LoginSecrets {
    /// Fresh random secrets (256 bits each).
    pub fn new() -> LoginSecrets {
        let random = || {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            URL_SAFE_NO_PAD.encode(bytes)
        };
        LoginSecrets {
            verifier: random(),
            nonce: random(),
        }
    }

    /// The S256 PKCE challenge of the verifier.
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

impl Default for LoginSecrets {
    fn default() -> Self {
        LoginSecrets::new()
    }
}

/// One HTTP client for every provider call: no redirects followed, bounded time.
pub fn http() -> Result<&'static reqwest::Client, ProviderError> {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = HTTP.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("cockpit/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Config(format!("cannot build the HTTP client: {e}")))?;
    Ok(HTTP.get_or_init(|| client))
}

/// Reads a bounded body.
async fn body(resp: reqwest::Response, what: &'static str) -> Result<Vec<u8>, ProviderError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(ProviderError::BadAnswer(format!("{what} (too large)")));
    }
    let mut resp = resp;
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| ProviderError::Unreachable(what))?
    {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_ANSWER_BYTES {
            return Err(ProviderError::BadAnswer(format!("{what} (too large)")));
        }
    }
    Ok(out)
}

/// `GET url` with a bearer token (or none), JSON back. A 401 or 403 is `Refused`.
async fn get_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    what: &'static str,
) -> Result<Value, ProviderError> {
    let mut request = http.get(url).header("accept", "application/json");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let resp = request
        .send()
        .await
        .map_err(|_| ProviderError::Unreachable(what))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(ProviderError::Refused(format!("{what} answered {status}")));
    }
    if !status.is_success() {
        return Err(ProviderError::BadAnswer(format!(
            "{what} (status {status})"
        )));
    }
    let bytes = body(resp, what).await?;
    serde_json::from_slice(&bytes)
        .map_err(|_| ProviderError::BadAnswer(format!("{what} (not JSON)")))
}

/// The provider's endpoints: from the config, or for OIDC from discovery (the configured
/// endpoints, if any, win). Discovery checks that the document names the configured issuer.
pub async fn endpoints(
    http: &reqwest::Client,
    provider: &ProviderConfig,
) -> Result<Endpoints, ProviderError> {
    if provider.kind != ProviderKind::Oidc {
        return Ok(Endpoints {
            authorize: provider.authorize_url.clone(),
            token: provider.access_token_url.clone(),
            userinfo: Some(provider.user_info_url.clone()).filter(|u| !u.is_empty()),
            jwks_uri: None,
        });
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        provider.issuer.trim_end_matches('/')
    );
    let doc = get_json(http, &url, None, "discovery document").await?;
    if doc["issuer"].as_str() != Some(provider.issuer.as_str()) {
        return Err(ProviderError::BadAnswer(
            "discovery document (its issuer is not the configured one)".into(),
        ));
    }
    let field = |name: &str| doc[name].as_str().map(str::to_string);
    let pick = |configured: &str, name: &str| {
        Some(configured.to_string())
            .filter(|c| !c.is_empty())
            .or_else(|| field(name))
    };
    let missing = |name: &str| ProviderError::BadAnswer(format!("discovery document (no {name})"));
    Ok(Endpoints {
        authorize: pick(&provider.authorize_url, "authorization_endpoint")
            .ok_or_else(|| missing("authorization_endpoint"))?,
        token: pick(&provider.access_token_url, "token_endpoint")
            .ok_or_else(|| missing("token_endpoint"))?,
        userinfo: pick(&provider.user_info_url, "userinfo_endpoint"),
        jwks_uri: Some(field("jwks_uri").ok_or_else(|| missing("jwks_uri"))?),
    })
}

/// The URL that starts a login at the provider: code flow, PKCE S256, and for OIDC the nonce
/// and the `openid` scope.
pub fn authorize_url(
    provider: &ProviderConfig,
    endpoints: &Endpoints,
    redirect_uri: &str,
    state: &str,
    secrets: &LoginSecrets,
) -> Result<url::Url, ProviderError> {
    let mut url = url::Url::parse(&endpoints.authorize)
        .map_err(|e| ProviderError::Config(format!("authorize URL: {e}")))?;
    let mut scopes: Vec<&str> = provider
        .scope
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .collect();
    if provider.kind == ProviderKind::Oidc && !scopes.contains(&"openid") {
        scopes.insert(0, "openid");
    }
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("code_challenge", &secrets.challenge())
            .append_pair("code_challenge_method", "S256");
        if !scopes.is_empty() {
            query.append_pair("scope", &scopes.join(" "));
        }
        if provider.kind == ProviderKind::Oidc {
            query.append_pair("nonce", &secrets.nonce);
        }
    }
    Ok(url)
}

/// Exchanges an authorization code.
pub async fn exchange_code(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    endpoints: &Endpoints,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Result<TokenSet, ProviderError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(verifier) = verifier {
        form.push(("code_verifier", verifier));
    }
    token_request(http, provider, &endpoints.token, form).await
}

/// Exchanges a refresh token.
pub async fn refresh(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    endpoints: &Endpoints,
    refresh_token: &str,
) -> Result<TokenSet, ProviderError> {
    let form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    token_request(http, provider, &endpoints.token, form).await
}

/// A token endpoint request with the provider's client authentication method.
pub async fn token_request(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    url: &str,
    mut form: Vec<(&str, &str)>,
) -> Result<TokenSet, ProviderError> {
    let secret = provider.client_secret.expose();
    let mut request = http.post(url).header("accept", "application/json");
    match provider.token_auth {
        // RFC 6749 §2.3.1: the id and secret are form-encoded before they are joined.
        TokenAuth::Basic => {
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(&provider.client_id), Some(encode(secret)));
        }
        TokenAuth::Post => {
            form.push(("client_id", provider.client_id.as_str()));
            form.push(("client_secret", secret));
        }
    }
    let resp = request
        .form(&form)
        .send()
        .await
        .map_err(|_| ProviderError::Unreachable("token endpoint"))?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = body(resp, "token endpoint").await?;
    let fields = parse_token_answer(&content_type, &bytes)
        .ok_or_else(|| ProviderError::BadAnswer(format!("token endpoint (status {status})")))?;
    token_set(status.is_success(), fields)
}

/// A token answer as a map: JSON, or form-encoded (GitHub's default); by content type, else
/// whichever parses.
pub fn parse_token_answer(content_type: &str, bytes: &[u8]) -> Option<Map<String, Value>> {
    let json = || match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let form = || {
        let text = std::str::from_utf8(bytes).ok()?;
        if text.trim().is_empty() || text.trim_start().starts_with(['{', '<']) {
            return None;
        }
        let map: Map<String, Value> = url::form_urlencoded::parse(text.trim().as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        Some(map)
    };
    if content_type.contains("application/x-www-form-urlencoded") {
        form()
    } else if content_type.contains("json") {
        json()
    } else {
        json().or_else(form)
    }
}

/// The typed answer: an error (also in a 200, as GitHub does) or a token set.
fn token_set(success: bool, fields: Map<String, Value>) -> Result<TokenSet, ProviderError> {
    let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
    if let Some(error) = text("error") {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(ProviderError::Refused(error));
    }
    if !success {
        return Err(ProviderError::BadAnswer(
            "token endpoint (an error without a code)".into(),
        ));
    }
    let access_token = text("access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::BadAnswer("token endpoint (no access_token)".into()))?;
    let expires_in = match fields.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(TokenSet {
        access_token,
        refresh_token: text("refresh_token").filter(|t| !t.is_empty()),
        expires_in,
        scope: text("scope"),
        id_token: text("id_token"),
        fields,
    })
}

/// Who the tokens belong to. `nonce` is the login's nonce (OIDC, at login); after a refresh it
/// is `None` and a new ID token's nonce is not checked (OIDC Core §12.2).
pub async fn identify(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    endpoints: &Endpoints,
    tokens: &TokenSet,
    nonce: Option<&str>,
) -> Result<Identity, ProviderError> {
    match provider.kind {
        ProviderKind::Github => github(http, provider, &tokens.access_token).await,
        ProviderKind::OAuth2 => {
            let info = get_json(
                http,
                &provider.user_info_url,
                Some(&tokens.access_token),
                "user info endpoint",
            )
            .await?;
            from_claims(provider, &info, None)
        }
        ProviderKind::Oidc => {
            let claims = match &tokens.id_token {
                Some(id_token) => {
                    Some(verify_id_token(http, provider, endpoints, id_token, nonce).await?)
                }
                None if nonce.is_some() => {
                    return Err(ProviderError::IdToken(
                        "the token answer has no id_token".into(),
                    ));
                }
                None => None,
            };
            let wants_info = claims
                .as_ref()
                .is_none_or(|c| c.get(&provider.groups_claim).is_none());
            let info = match (&endpoints.userinfo, wants_info) {
                (Some(url), true) => {
                    let info =
                        get_json(http, url, Some(&tokens.access_token), "user info endpoint")
                            .await?;
                    // OIDC Core §5.3.2: the user info is about the ID token's subject.
                    if let Some(claims) = &claims
                        && info["sub"] != claims["sub"]
                    {
                        return Err(ProviderError::BadAnswer(
                            "user info endpoint (another subject than the ID token's)".into(),
                        ));
                    }
                    Some(info)
                }
                _ => None,
            };
            match (claims, info) {
                (Some(claims), info) => from_claims(provider, &claims, info.as_ref()),
                (None, Some(info)) => from_claims(provider, &info, None),
                (None, None) => Err(ProviderError::BadAnswer(
                    "token endpoint (neither an ID token nor a user info endpoint)".into(),
                )),
            }
        }
    }
}

/// Identity and groups from OIDC claims or OAuth2 user info; groups from `extra` when the
/// claims lack them.
pub fn from_claims(
    provider: &ProviderConfig,
    claims: &Value,
    extra: Option<&Value>,
) -> Result<Identity, ProviderError> {
    let as_text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let user = if provider.identity_claim.is_empty() {
        ["sub", "login", "username", "id"]
            .iter()
            .find_map(|k| as_text(&claims[*k]))
    } else {
        as_text(&claims[provider.identity_claim.as_str()])
    }
    .ok_or_else(|| {
        ProviderError::BadAnswer(format!(
            "user claims (no {})",
            if provider.identity_claim.is_empty() {
                "sub, login, username or id"
            } else {
                provider.identity_claim.as_str()
            }
        ))
    })?;
    let groups_of = |v: &Value| -> Option<Vec<String>> {
        match &v[provider.groups_claim.as_str()] {
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(|g| g.as_str().map(|s| s.trim_start_matches('/').to_string()))
                    .filter(|g| !g.is_empty())
                    .take(1000)
                    .collect(),
            ),
            Value::String(s) if !s.is_empty() => Some(vec![s.trim_start_matches('/').to_string()]),
            _ => None,
        }
    };
    let groups = groups_of(claims)
        .or_else(|| extra.and_then(groups_of))
        .unwrap_or_default();
    let username = ["preferred_username", "login", "name", "email"]
        .iter()
        .find_map(|k| as_text(&claims[*k]))
        .unwrap_or_else(|| user.clone());
    Ok(Identity {
        identity: format!("{}:{user}", provider.name),
        username,
        groups,
    })
}

/// GitHub: the login, the organizations and the teams.
async fn github(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    token: &str,
) -> Result<Identity, ProviderError> {
    let api = provider.api_url.trim_end_matches('/');
    let user = get_json(http, &format!("{api}/user"), Some(token), "user endpoint").await?;
    let login = user["login"]
        .as_str()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ProviderError::BadAnswer("user endpoint (no login)".into()))?
        .to_string();
    let orgs = get_json(
        http,
        &format!("{api}/user/orgs?per_page={GITHUB_PAGE}"),
        Some(token),
        "organizations endpoint",
    )
    .await?;
    let teams = get_json(
        http,
        &format!("{api}/user/teams?per_page={GITHUB_PAGE}"),
        Some(token),
        "teams endpoint",
    )
    .await?;
    let (Value::Array(orgs), Value::Array(teams)) = (orgs, teams) else {
        return Err(ProviderError::BadAnswer(
            "organizations or teams endpoint (not a list)".into(),
        ));
    };
    let mut groups: Vec<String> = orgs
        .iter()
        .filter_map(|o| o["login"].as_str().map(str::to_string))
        .collect();
    for team in &teams {
        if let (Some(org), Some(slug)) = (
            team["organization"]["login"].as_str(),
            team["slug"].as_str(),
        ) {
            groups.push(format!("{org}/{slug}"));
        }
    }
    groups.dedup();
    Ok(Identity {
        identity: format!("github:{login}"),
        username: login,
        groups,
    })
}

/// The algorithms an ID token may be signed with: asymmetric only (an `HS256` token would be
/// keyed by the client secret, and `none` is never accepted).
const ID_TOKEN_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Verifies an ID token with the issuer's JWKS: signature, `iss`, `aud` (our client id), `exp`,
/// and `nonce` when given. Returns its claims.
pub async fn verify_id_token(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    endpoints: &Endpoints,
    id_token: &str,
    nonce: Option<&str>,
) -> Result<Value, ProviderError> {
    let bad = |why: &str| ProviderError::IdToken(why.to_string());
    let header = jsonwebtoken::decode_header(id_token).map_err(|_| bad("not a JWT"))?;
    if !ID_TOKEN_ALGORITHMS.contains(&header.alg) {
        return Err(bad("signed with an algorithm that is not accepted"));
    }
    let jwks_uri = endpoints
        .jwks_uri
        .as_deref()
        .ok_or_else(|| bad("the issuer publishes no key set"))?;
    let keys = get_json(http, jwks_uri, None, "key set").await?;
    let keys: JwkSet =
        serde_json::from_value(keys).map_err(|_| ProviderError::BadAnswer("key set".into()))?;
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| bad("signed with a key the issuer does not publish"))?;
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err(bad("the issuer's key is symmetric"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| bad("the issuer's key cannot be read"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[provider.issuer.as_str()]);
    validation.set_audience(&[provider.client_id.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(id_token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => bad("expired"),
            ErrorKind::InvalidIssuer => bad("from another issuer"),
            ErrorKind::InvalidAudience => bad("for another client"),
            ErrorKind::InvalidSignature => bad("the signature does not verify"),
            _ => bad("malformed or not verifiable"),
        }
    })?;
    if let Some(nonce) = nonce
        && data.claims["nonce"].as_str() != Some(nonce)
    {
        return Err(bad("its nonce is not this login's"));
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_in_json_or_form_encoding() {
        let form = parse_token_answer(
            "application/x-www-form-urlencoded; charset=utf-8",
            b"access_token=gho_abc&scope=read%3Aorg&token_type=bearer",
        )
        .expect("form");
        let tokens = token_set(true, form).expect("tokens");
        assert_eq!(tokens.access_token, "gho_abc");
        assert_eq!(tokens.scope.as_deref(), Some("read:org"));
        let json = parse_token_answer(
            "application/json",
            br#"{"access_token":"x","expires_in":3600,"refresh_token":"r"}"#,
        )
        .expect("json");
        let tokens = token_set(true, json).expect("tokens");
        assert_eq!(
            (tokens.expires_in, tokens.refresh_token.as_deref()),
            (Some(3600), Some("r"))
        );
        // GitHub answers a bad code with 200 and a form-encoded error.
        let error = parse_token_answer(
            "text/plain",
            b"error=bad_verification_code&error_description=x",
        )
        .expect("sniffed");
        assert_eq!(
            token_set(true, error).map(|t| t.access_token),
            Err(ProviderError::Refused("bad_verification_code".into()))
        );
        assert!(parse_token_answer("text/html", b"<html>").is_none());
    }

    #[test]
    fn login_secrets_are_random_and_the_challenge_is_s256() {
        let a = LoginSecrets::new();
        let b = LoginSecrets::new();
        assert_ne!(a.verifier, b.verifier);
        assert_ne!(a.nonce, b.nonce);
        assert!(a.verifier.len() >= 43);
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(a.verifier.as_bytes()));
        assert_eq!(a.challenge(), expected);
    }
}
