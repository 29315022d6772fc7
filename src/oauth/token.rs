//! The login token of the central OAuth2 server, without IO.
//!
//! After a provider login the proxy signs, with its Ed25519 key (algorithm `EdDSA`, pinned on both
//! sides), a short JWT for the app that asked:
//!
//! | claim | value |
//! |---|---|
//! | `iss` | the proxy's `[oauth_proxy].url` |
//! | `aud` | the app's redirect URL (the one in the allowlist), so a token for one app is refused by another |
//! | `iat`, `exp` | issue time and expiry, `exp - iat` = [`TOKEN_LIFETIME_SECS`] (5 minutes) |
//! | `jti` | a random id; the app accepts each id once |
//! | `nonce` | the app's `state`, which the app keeps in the browser's session |
//! | `provider` | the provider's name |
//! | `user_info` | the provider's user info, reduced to `user_info_fields` |
//!
//! The user fields are nested under `user_info` rather than spread at the top level so that a
//! provider field named `aud` or `exp` can never stand in for a claim.
//!
//! [`verify`] is what an app runs on a token; it takes the current time from its caller.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// How long a login token is valid: long enough for one browser redirect, short enough that a
/// leaked token is soon useless.
pub const TOKEN_LIFETIME_SECS: i64 = 300;

/// Clock skew tolerated between the proxy and an app, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// The largest token an app looks at, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The claims of a login token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginClaims {
    /// The proxy that signed it (`[oauth_proxy].url`).
    pub iss: String,
    /// The app it is for: the redirect URL the app asked the proxy to come back to.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// A random id the app accepts once.
    pub jti: String,
    /// The app's own `state`, echoed so the app can tie the token to the browser that started.
    pub nonce: String,
    /// Which provider logged the user in.
    pub provider: String,
    /// The user's info, reduced to the provider's `user_info_fields`.
    pub user_info: Map<String, Value>,
    /// Who the provider says the user is (`github:alice`), as the bot's login names them;
    /// absent when the proxy could not tell (apps that need an identity refuse the login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The user's groups at the provider (organizations, `org/team`, the OIDC groups claim):
    /// what `[access]` gives roles to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl LoginClaims {
    /// The claims for a fresh login at `now` (Unix seconds).
    pub fn new(
        issuer: &str,
        redirect_url: &str,
        app_state: &str,
        provider: &str,
        user_info: Map<String, Value>,
        now: i64,
    ) -> LoginClaims {
        LoginClaims {
            iss: issuer.to_string(),
            aud: redirect_url.to_string(),
            iat: now,
            exp: now + TOKEN_LIFETIME_SECS,
            jti: random_id(),
            nonce: app_state.to_string(),
            provider: provider.to_string(),
            user_info,
            identity: None,
            groups: Vec::new(),
        }
    }
}

/// 128 random bits as 32 hex characters.
pub fn random_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Keeps only the wanted fields of a provider's user info (a JSON object; anything else is empty).
pub fn filter_fields(info: &Value, fields: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    if let Value::Object(map) = info {
        for field in fields {
            if let Some(value) = map.get(field) {
                out.insert(field.clone(), value.clone());
            }
        }
    }
    out
}

/// Whether `wanted` is one of the allowed redirect URLs. Exact string equality: no prefix, no
/// normalisation, so `https://app.example.com.evil.net/...` never passes for `https://app.example.com/...`.
pub fn redirect_allowed(allowed: &[String], wanted: &str) -> bool {
    allowed.iter().any(|a| a == wanted)
}

/// `next` when it is a local path of this site (`/x?y`), else `None`: no scheme, no host, no
/// `//host` or `/\host` (which browsers read as another host), no control characters.
pub fn local_path(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\');
    ok.then_some(next)
}

/// An Ed25519 key pair that signs login tokens. `Debug` shows the public half only.
pub struct SigningKey {
    /// The private key in the form jsonwebtoken signs with (PKCS#8 DER).
    encoding: EncodingKey,
    /// The key itself, kept to write the key file and derive the public key.
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.public_hex())
    }
}

/// Why a key could not be read; never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM text is not an Ed25519 PKCS#8 private key.
    #[error("not an Ed25519 private key in PKCS#8 PEM (BEGIN PRIVATE KEY)")]
    BadPrivateKey,
    /// A verify key is not 64 hex characters (32 bytes).
    #[error("expected the proxy's public key as 64 hex characters (from <proxy>/oauth/key)")]
    BadVerifyKey,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        use rand::RngCore;
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        SigningKey::from_seed(seed)
    }

    /// The key with this 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        // Encoding a 32-byte seed as PKCS#8 has no failure case in ed25519-dalek (alloc enabled).
        let der = key
            .to_pkcs8_der()
            .map(|doc| doc.as_bytes().to_vec())
            .unwrap_or_default();
        SigningKey {
            encoding: EncodingKey::from_ed_der(&der),
            key,
        }
    }

    /// Reads a `BEGIN PRIVATE KEY` PEM (what [`SigningKey::to_pem`] writes, and what
    /// `openssl genpkey -algorithm ed25519` writes).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        use base64::engine::general_purpose::STANDARD;
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let body = pem
            .trim()
            .strip_prefix("-----BEGIN PRIVATE KEY-----")
            .and_then(|rest| rest.strip_suffix("-----END PRIVATE KEY-----"))
            .ok_or(KeyError::BadPrivateKey)?;
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(body).map_err(|_| KeyError::BadPrivateKey)?;
        let key =
            ed25519_dalek::SigningKey::from_pkcs8_der(&der).map_err(|_| KeyError::BadPrivateKey)?;
        Ok(SigningKey {
            encoding: EncodingKey::from_ed_der(&der),
            key,
        })
    }

    /// The key as a PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        use base64::engine::general_purpose::STANDARD;
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let der = self
            .key
            .to_pkcs8_der()
            .map(|doc| doc.as_bytes().to_vec())
            .unwrap_or_default();
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    /// The public key, 32 bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key as 64 hex characters: what `/oauth/key` serves and apps configure as
    /// `verify_key`.
    pub fn public_hex(&self) -> String {
        hex::encode(self.public_bytes())
    }

    /// The public key as a JWKS (RFC 8037 `OKP`/`Ed25519`), with the key id apps may match.
    pub fn jwks(&self) -> Value {
        let x = URL_SAFE_NO_PAD.encode(self.public_bytes());
        json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid(),
        }]})
    }

    /// The key id: the first 16 hex characters of the public key.
    pub fn kid(&self) -> String {
        self.public_hex()[..16].to_string()
    }

    /// Signs claims as an EdDSA JWT.
    pub fn sign(&self, claims: &LoginClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }
}

/// The key an app verifies login tokens with.
#[derive(Clone)]
pub struct VerifyKey {
    /// The public key for jsonwebtoken.
    decoding: DecodingKey,
}

impl VerifyKey {
    /// From the 64 hex characters `/oauth/key` serves.
    pub fn from_hex(hex_key: &str) -> Result<VerifyKey, KeyError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| KeyError::BadVerifyKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadVerifyKey)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadVerifyKey)?;
        Ok(VerifyKey {
            decoding: DecodingKey::from_ed_der(&bytes),
        })
    }
}

/// Why an app refuses a login token. The texts are shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, too large, not EdDSA, bad signature, wrong issuer or audience, bad claims.
    #[error("the login token is invalid")]
    Invalid,
    /// Genuine but past `exp`, or issued for longer than the proxy ever issues.
    #[error("the login token has expired")]
    Expired,
}

/// Verifies a login token for the app whose redirect URL is `audience`, at `now` (Unix seconds):
/// size, EdDSA signature with `key` (the header's `alg` is never trusted), `iss`, `aud`, and
/// `iat <= now + leeway < exp + 2*leeway`, `exp - iat <= TOKEN_LIFETIME_SECS`. The nonce and the
/// one-time `jti` are the caller's (they need the session and memory).
pub fn verify(
    token: &str,
    key: &VerifyKey,
    issuer: &str,
    audience: &str,
    now: i64,
) -> Result<LoginClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Invalid);
    }
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    // Expiry is checked below against the caller's clock.
    validation.validate_exp = false;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<LoginClaims>(token, &key.decoding, &validation)
        .map_err(|_| TokenError::Invalid)?;
    let claims = data.claims;
    if claims.iat > now + LEEWAY_SECS || claims.exp <= claims.iat {
        return Err(TokenError::Invalid);
    }
    if claims.exp - claims.iat > TOKEN_LIFETIME_SECS || now >= claims.exp + LEEWAY_SECS {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://proxy.example.com/oauth";
    const AUD: &str = "https://app.example.com/test/callback";
    const NOW: i64 = 1_700_000_000;

    fn key() -> SigningKey {
        SigningKey::from_seed([7; 32])
    }

    fn claims() -> LoginClaims {
        let mut info = Map::new();
        info.insert("login".into(), json!("octocat"));
        LoginClaims::new(ISS, AUD, "app-state", "github", info, NOW)
    }

    fn check(token: &str, aud: &str, now: i64) -> Result<LoginClaims, TokenError> {
        let verify_key = VerifyKey::from_hex(&key().public_hex()).expect("verify key");
        verify(token, &verify_key, ISS, aud, now)
    }

    #[test]
    fn a_fresh_token_verifies_with_all_its_claims() {
        let first = claims();
        let token = key().sign(&first).expect("sign");
        assert_eq!(check(&token, AUD, NOW + 10), Ok(first.clone()));
        assert_eq!(first.exp - first.iat, 300);
        assert_eq!(first.jti.len(), 32);
        assert_ne!(first.jti, claims().jti);
    }

    #[test]
    fn tokens_are_refused_for_each_broken_rule() {
        let good = key().sign(&claims()).expect("sign");
        let resign = |f: &dyn Fn(&mut LoginClaims)| {
            let mut c = claims();
            f(&mut c);
            key().sign(&c).expect("sign")
        };
        let other_key = SigningKey::from_seed([8; 32])
            .sign(&claims())
            .expect("sign");
        let long_lived = resign(&|c| c.exp = c.iat + 3600);
        let wrong_iss = resign(&|c| c.iss = "https://evil.example.com/oauth".into());
        let future = resign(&|c| {
            c.iat = NOW + 600;
            c.exp = NOW + 900
        });
        // A changed field: payload swapped, signature kept.
        let parts: Vec<&str> = good.split('.').collect();
        let mut forged_claims = claims();
        forged_claims
            .user_info
            .insert("login".into(), json!("admin"));
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        let changed = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        // alg none with the same claims.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let alg_none = format!("{}.{}.", none_header, parts[1]);
        let cases: Vec<(&str, String, &str, i64, TokenError)> = vec![
            (
                "other app",
                good.clone(),
                "https://other.example.com/cb",
                NOW,
                TokenError::Invalid,
            ),
            (
                "expired",
                good.clone(),
                AUD,
                NOW + 300 + LEEWAY_SECS,
                TokenError::Expired,
            ),
            ("other key", other_key, AUD, NOW, TokenError::Invalid),
            ("changed field", changed, AUD, NOW, TokenError::Invalid),
            ("alg none", alg_none, AUD, NOW, TokenError::Invalid),
            ("long lived", long_lived, AUD, NOW, TokenError::Expired),
            ("wrong issuer", wrong_iss, AUD, NOW, TokenError::Invalid),
            (
                "issued in the future",
                future,
                AUD,
                NOW,
                TokenError::Invalid,
            ),
            ("garbage", "a.b.c".into(), AUD, NOW, TokenError::Invalid),
            (
                "huge",
                "a".repeat(MAX_TOKEN_BYTES + 1),
                AUD,
                NOW,
                TokenError::Invalid,
            ),
        ];
        for (what, token, aud, now, want) in cases {
            assert_eq!(check(&token, aud, now), Err(want), "{what}");
        }
        assert!(check(&good, AUD, NOW + 299).is_ok());
    }

    #[test]
    fn the_key_round_trips_through_pem_and_publishes_hex_and_jwks() {
        let key = key();
        let again = SigningKey::from_pem(&key.to_pem()).expect("pem");
        assert_eq!(again.public_hex(), key.public_hex());
        assert_eq!(key.public_hex().len(), 64);
        let jwks = key.jwks();
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        let x = jwks["keys"][0]["x"].as_str().expect("x");
        assert_eq!(URL_SAFE_NO_PAD.decode(x).expect("b64"), key.public_bytes());
        assert!(!format!("{key:?}").contains(&key.to_pem()[28..60]));
        assert_eq!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .err(),
            Some(KeyError::BadPrivateKey)
        );
    }

    #[test]
    fn verify_keys_must_be_32_bytes_of_hex() {
        for bad in ["", "abcd", &"zz".repeat(32), &"00".repeat(33)] {
            assert!(VerifyKey::from_hex(bad).is_err(), "{bad}");
        }
        assert!(VerifyKey::from_hex(&key().public_hex()).is_ok());
    }

    #[test]
    fn redirects_match_exactly() {
        let allowed = vec![AUD.to_string()];
        for (wanted, ok) in [
            (AUD, true),
            ("https://app.example.com.evil.net/test/callback", false),
            ("https://app.example.com/test/callback/../evil", false),
            ("https://app.example.com/test/callbackx", false),
            ("https://app.example.com/test/callback?x=1", false),
            ("https://APP.example.com/test/callback", false),
            ("https://app.example.com/test", false),
            ("", false),
        ] {
            assert_eq!(redirect_allowed(&allowed, wanted), ok, "{wanted}");
        }
    }

    #[test]
    fn next_urls_must_be_local_paths() {
        for (next, ok) in [
            ("/test", true),
            ("/test?x=1&y=2", true),
            ("/", true),
            ("//evil.net/x", false),
            ("/\\evil.net", false),
            ("https://evil.net/", false),
            ("test", false),
            ("/a\r\nSet-Cookie: x", false),
            ("", false),
        ] {
            assert_eq!(local_path(next).is_some(), ok, "{next:?}");
        }
    }

    #[test]
    fn user_info_keeps_only_the_configured_fields() {
        let info = json!({"login": "octocat", "email": "o@example.com", "id": 1, "token": "x"});
        let kept = filter_fields(&info, &["login".into(), "email".into(), "missing".into()]);
        assert_eq!(
            Value::Object(kept),
            json!({"login": "octocat", "email": "o@example.com"})
        );
        assert!(filter_fields(&json!([1]), &["login".into()]).is_empty());
    }
}
