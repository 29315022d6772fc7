//! JWT claim rules for the REST API (SPEC §5), without IO.
//!
//! A request carries its token in `Authorization: bearer <jwt>` (scheme in any case) or in the
//! `jwt` cookie ([`token_from_parts`]). [`JwtRules::verify`] then checks, in this order:
//!
//! 1. size: a token over [`MAX_TOKEN_BYTES`] is refused before any parsing;
//! 2. signature: the algorithm is **pinned to ES384** with the configured P-384 public key; the
//!    token header's `alg` is never trusted (`none`, `HS*`, `RS*`, `ES256`, `EdDSA` are refused);
//! 3. `exp`: required, a number; the token is expired when `now_secs >= exp` (no leeway, so a
//!    cache entry kept "until `exp`" never outlives the token); `nbf`, when present, may be at most
//!    [`NBF_LEEWAY_SECS`] in the future to absorb clock skew with the issuer;
//! 4. `iss` equals the configured issuer; `aud`, when present (string or array), contains the
//!    organization;
//! 5. membership: `globalid == organization`, or `azp == organization`, or `scope` (a JSON array
//!    or a comma-separated string) contains `user:memberof:<organization>`.
//!
//! Failures of 1, 2, 4 and malformed claims are [`AuthError::Invalid`]; an expired token is
//! [`AuthError::Expired`]; a valid token of a non-member is [`AuthError::Unauthorized`].
//! The signature is always checked before any claim, so a forged token learns nothing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

/// The largest token accepted, in bytes (8 KiB); longer ones are refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How far in the future a token's `nbf` may be, in seconds, to absorb clock skew with the issuer.
/// `exp` gets no leeway at all.
pub const NBF_LEEWAY_SECS: u64 = 60;

/// DER prefix of a P-384 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 },
/// BIT STRING (0 unused bits) }, followed by the 97-byte uncompressed point `04 || X || Y`.
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// Length of an uncompressed P-384 point (`04 || X || Y`).
const P384_POINT_LEN: usize = 97;

/// Why a request's JWT was refused; the `Display` texts are the API's 401 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no bearer token and no `jwt` cookie.
    #[error(
        "missing token: send the JWT as `Authorization: Bearer <token>` (or as the `jwt` cookie)"
    )]
    NotJwt,
    /// The token is genuine but its `exp` has passed.
    #[error("Your JWT has expired")]
    Expired,
    /// The token is malformed, too large, badly signed, or has a wrong issuer, audience or claim.
    #[error("Your JWT is invalid")]
    Invalid,
    /// The token is genuine but does not show membership of the organization.
    #[error("Unauthorized")]
    Unauthorized,
    /// The token is genuine, but its holder was logged out everywhere (`users revoke`) after it
    /// was issued.
    #[error(
        "Your JWT was issued before its holder's access was revoked: log in again for a new one"
    )]
    Revoked,
}

/// Why a key could not be loaded or used; messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a PEM block with the expected label.
    #[error("expected a PEM block starting with -----BEGIN {label}-----")]
    NotPem {
        /// The PEM label that was expected (`PUBLIC KEY` or `PRIVATE KEY`).
        label: &'static str,
    },
    /// The PEM body is not valid base64.
    #[error("the {label} PEM body is not valid base64")]
    Base64 {
        /// The PEM label of the block that failed to decode.
        label: &'static str,
    },
    /// The public key is not a P-384 (secp384r1) SubjectPublicKeyInfo.
    #[error("the public key is not a P-384 (secp384r1) EC key in SPKI form")]
    NotP384Public,
    /// The key decoded but is not a usable P-384 key (bad point, wrong curve, not PKCS#8).
    #[error("the {what} is not a valid P-384 key")]
    InvalidKey {
        /// Which key was refused: `public key` or `private key (PKCS#8)`.
        what: &'static str,
    },
    /// The issuer or the organization is empty, which would let claim-less tokens match.
    #[error("the JWT {what} must not be empty")]
    EmptySetting {
        /// Which setting is empty: `issuer` or `organization`.
        what: &'static str,
    },
    /// The claims to sign are not a JSON object.
    #[error("JWT claims must be a JSON object")]
    ClaimsNotObject,
}

/// A token that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The token's `exp` (seconds since the Unix epoch): how long a cache may keep this result.
    pub exp: u64,
    /// The token's `iat`, if it has a readable one: whether it was issued before its holder was
    /// revoked (`auth::revoked`).
    pub iat: Option<u64>,
    /// Who the token speaks for: its `username`, else its `globalid`, else its `azp`, else its `sub`.
    pub user: String,
    /// The organizations its `user:memberof:<org>` scopes name (the configured organization
    /// always among them): the groups `[access]` maps to roles.
    pub groups: Vec<String>,
}

/// The most groups taken from one token's scopes (the rest are ignored).
const MAX_GROUPS: usize = 64;

/// The JWT rules of one configuration: the issuer's P-384 public key, the issuer and organization.
#[derive(Clone)]
pub struct JwtRules {
    /// The issuer's public key (ES384 only), decoded once at startup.
    key: DecodingKey,
    /// The `iss` every accepted token must carry (`[oauth].jwt_issuer`).
    issuer: String,
    /// The organization whose members are let in (`[oauth].organization`).
    organization: String,
    /// The `scope` entry that proves membership: `user:memberof:<organization>`.
    member_scope: String,
    /// jsonwebtoken's settings: ES384 only, every claim check disabled (done here, against `now_secs`).
    validation: Validation,
}

impl std::fmt::Debug for JwtRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtRules")
            .field("issuer", &self.issuer)
            .field("organization", &self.organization)
            .finish_non_exhaustive()
    }
}

impl JwtRules {
    /// Loads the issuer's public key from a P-384 SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// The PEM may contain real newlines or the two-character sequence `\n` (as a one-line TOML
    /// string often does). The point is checked to lie on the curve now, not at the first request.
    /// An empty issuer or organization is refused.
    pub fn new(public_pem: &str, issuer: &str, organization: &str) -> Result<JwtRules, KeyError> {
        if issuer.is_empty() {
            return Err(KeyError::EmptySetting { what: "issuer" });
        }
        if organization.is_empty() {
            return Err(KeyError::EmptySetting {
                what: "organization",
            });
        }
        let der = pem_body(public_pem, "PUBLIC KEY")?;
        let point = der
            .strip_prefix(P384_SPKI_PREFIX.as_slice())
            .filter(|point| point.len() == P384_POINT_LEN && point.first() == Some(&0x04))
            .ok_or(KeyError::NotP384Public)?;
        // `from_ec_der` takes the SEC1 point, despite its name.
        let key = DecodingKey::from_ec_der(point);
        // Building a verifier parses the point: an off-curve point fails here with a key error,
        // while a valid key merely rejects the empty signature.
        jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES384)
            .map_err(|_| KeyError::InvalidKey { what: "public key" })?;

        let mut validation = Validation::new(Algorithm::ES384);
        validation.algorithms = vec![Algorithm::ES384];
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;

        Ok(JwtRules {
            key,
            issuer: issuer.to_owned(),
            organization: organization.to_owned(),
            member_scope: format!("user:memberof:{organization}"),
            validation,
        })
    }

    /// The organization whose members this configuration lets in.
    pub fn organization(&self) -> &str {
        &self.organization
    }

    /// Verifies `token` at time `now_secs` (seconds since the Unix epoch); see the module doc for
    /// the rules and their order.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Verified, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid);
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|_| AuthError::Invalid)?
            .claims;

        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(AuthError::Invalid)?;
        if now_secs >= exp {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(AuthError::Invalid)?;
            if nbf > now_secs.saturating_add(NBF_LEEWAY_SECS) {
                return Err(AuthError::Invalid);
            }
        }

        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(AuthError::Invalid);
        }
        match claims.get("aud") {
            None => {}
            Some(Value::String(aud)) if *aud == self.organization => {}
            Some(Value::Array(auds))
                if auds.iter().any(|a| a.as_str() == Some(&self.organization)) => {}
            Some(_) => return Err(AuthError::Invalid),
        }

        if !self.is_member(&claims) {
            return Err(AuthError::Unauthorized);
        }
        let user = ["username", "globalid", "azp", "sub"]
            .iter()
            .find_map(|name| claims.get(*name).and_then(Value::as_str))
            .filter(|user| !user.is_empty())
            .ok_or(AuthError::Invalid)?;
        let mut groups: Vec<String> = match claims.get("scope") {
            Some(Value::Array(scopes)) => scopes
                .iter()
                .filter_map(|s| s.as_str()?.trim().strip_prefix("user:memberof:"))
                .map(str::to_owned)
                .collect(),
            Some(Value::String(scopes)) => scopes
                .split(',')
                .filter_map(|s| s.trim().strip_prefix("user:memberof:"))
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        groups.retain(|g| !g.is_empty());
        groups.truncate(MAX_GROUPS);
        if !groups.contains(&self.organization) {
            groups.push(self.organization.clone());
        }
        Ok(Verified {
            exp,
            iat: claims.get("iat").and_then(numeric_date),
            user: user.to_owned(),
            groups,
        })
    }

    /// Whether the claims show membership of the organization.
    fn is_member(&self, claims: &Map<String, Value>) -> bool {
        let org = Some(self.organization.as_str());
        if claims.get("globalid").and_then(Value::as_str) == org
            || claims.get("azp").and_then(Value::as_str) == org
        {
            return true;
        }
        match claims.get("scope") {
            Some(Value::Array(scopes)) => scopes
                .iter()
                .any(|s| s.as_str().map(str::trim) == Some(self.member_scope.as_str())),
            Some(Value::String(scopes)) => scopes.split(',').any(|s| s.trim() == self.member_scope),
            _ => false,
        }
    }
}

/// Picks the token of a request: `Authorization: bearer <jwt>` (scheme in any case) first, else
/// the `jwt` cookie's value.
///
/// An `Authorization` header with another scheme is ignored (the cookie may still serve).
/// No token at all, or an empty one, is [`AuthError::NotJwt`]; one over [`MAX_TOKEN_BYTES`] is
/// [`AuthError::Invalid`].
pub fn token_from_parts<'a>(
    authorization: Option<&'a str>,
    cookie_jwt: Option<&'a str>,
) -> Result<&'a str, AuthError> {
    let bearer = authorization.and_then(|value| {
        let (scheme, rest) = value.trim().split_once(char::is_whitespace)?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let token = bearer
        .or(cookie_jwt.map(str::trim))
        .filter(|token| !token.is_empty())
        .ok_or(AuthError::NotJwt)?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}

/// Signs `claims` (a JSON object) with ES384 and a P-384 PKCS#8 private key PEM
/// (`-----BEGIN PRIVATE KEY-----`, real or escaped newlines). Used by `cockpit token` and tests.
pub fn mint_token(private_pem: &str, claims: &Value) -> Result<String, KeyError> {
    if !claims.is_object() {
        return Err(KeyError::ClaimsNotObject);
    }
    let der = pem_body(private_pem, "PRIVATE KEY")?;
    let key = EncodingKey::from_ec_der(&der);
    jsonwebtoken::encode(&Header::new(Algorithm::ES384), claims, &key).map_err(|_| {
        KeyError::InvalidKey {
            what: "private key (PKCS#8)",
        }
    })
}

/// Reads a JSON NumericDate as whole seconds: a non-negative integer, or a finite non-negative
/// number whose fraction is dropped.
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs < u64::MAX as f64)
            // Truncation is the intent: NumericDate fractions are below our resolution.
            .map(|secs| secs as u64)
    })
}

/// Decodes the body of the PEM block labelled `label`, accepting escaped `\n` line breaks.
fn pem_body(pem: &str, label: &'static str) -> Result<Vec<u8>, KeyError> {
    let text = pem.replace("\\r", "").replace("\\n", "\n");
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or(KeyError::NotPem { label })?;
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(base64)
        .map_err(|_| KeyError::Base64 { label })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const PRIVATE: &str = include_str!("../../tests/support/keys/test_p384.pem");
    const PUBLIC: &str = include_str!("../../tests/support/keys/test_p384.pub.pem");
    const OTHER_PRIVATE: &str = include_str!("../../tests/support/keys/other_p384.pem");
    const OTHER_PUBLIC: &str = include_str!("../../tests/support/keys/other_p384.pub.pem");

    const ISSUER: &str = "itsyouonline";
    const ORG: &str = "cockpit-org";
    const NOW: u64 = 1_700_000_000;

    fn rules() -> JwtRules {
        match JwtRules::new(PUBLIC, ISSUER, ORG) {
            Ok(rules) => rules,
            Err(err) => panic!("test key must load: {err}"),
        }
    }

    /// A member's claims, valid at `NOW` for an hour.
    fn member() -> Value {
        json!({
            "iss": ISSUER,
            "exp": NOW + 3600,
            "username": "alice",
            "scope": ["user:name", format!("user:memberof:{ORG}")],
        })
    }

    /// `member()` with `changes` merged in; a `null` value removes the claim.
    fn with(changes: Value) -> Value {
        let mut claims = member();
        if let (Some(map), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
            for (name, value) in changes {
                if value.is_null() {
                    map.remove(name);
                } else {
                    map.insert(name.clone(), value.clone());
                }
            }
        }
        claims
    }

    fn mint(private: &str, claims: &Value) -> String {
        match mint_token(private, claims) {
            Ok(token) => token,
            Err(err) => panic!("minting must work: {err}"),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with the given raw header, claims and signature segments.
    fn raw(header: &Value, claims: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    /// A request case: name, `Authorization` header, `jwt` cookie, expected user or error.
    type Case<'a> = (
        &'a str,
        Option<String>,
        Option<&'a str>,
        Result<&'a str, AuthError>,
    );

    /// Runs the whole request path (extraction then verification) and compares the outcome.
    fn check(
        name: &str,
        authorization: Option<&str>,
        cookie: Option<&str>,
        expected: Result<&str, AuthError>,
    ) {
        let rules = rules();
        let got = token_from_parts(authorization, cookie)
            .and_then(|token| rules.verify(token, NOW))
            .map(|verified| verified.user);
        assert_eq!(got.as_deref().map_err(|err| *err), expected, "case: {name}");
    }

    #[test]
    fn requests_are_judged_by_the_rules() {
        let good = mint(PRIVATE, &member());
        let bearer = |token: &str| format!("Bearer {token}");

        let alg_none = raw(&json!({"alg": "none", "typ": "JWT"}), &member(), "");
        let hs384 = match jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &member(),
            &EncodingKey::from_secret(PUBLIC.as_bytes()),
        ) {
            Ok(token) => token,
            Err(err) => panic!("HS384 minting must work: {err}"),
        };
        let good_signature = good.rsplit('.').next().unwrap_or_default();
        let es256_header = raw(
            &json!({"alg": "ES256", "typ": "JWT"}),
            &member(),
            good_signature,
        );
        let tampered = {
            let parts: Vec<&str> = good.split('.').collect();
            let forged = with(json!({"username": "mallory"}));
            format!(
                "{}.{}.{}",
                parts[0],
                b64(forged.to_string().as_bytes()),
                parts[2]
            )
        };
        let other_key = mint(OTHER_PRIVATE, &member());
        let expired = mint(PRIVATE, &with(json!({"exp": NOW})));
        let no_exp = mint(PRIVATE, &with(json!({"exp": null})));
        let string_exp = mint(PRIVATE, &with(json!({"exp": "later"})));
        let wrong_iss = mint(PRIVATE, &with(json!({"iss": "someone-else"})));
        let no_iss = mint(PRIVATE, &with(json!({"iss": null})));
        let wrong_aud = mint(PRIVATE, &with(json!({"aud": "other-org"})));
        let wrong_aud_list = mint(PRIVATE, &with(json!({"aud": ["a", "b"]})));
        let good_aud = mint(PRIVATE, &with(json!({"aud": ORG})));
        let good_aud_list = mint(PRIVATE, &with(json!({"aud": ["x", ORG]})));
        let future_nbf = mint(PRIVATE, &with(json!({"nbf": NOW + 3000})));
        let non_member = mint(
            PRIVATE,
            &with(json!({"scope": ["user:memberof:other-org", "user:name"]})),
        );
        let prefix_member = mint(
            PRIVATE,
            &with(json!({"scope": format!("user:memberof:{ORG}-evil")})),
        );
        let no_scope = mint(PRIVATE, &with(json!({"scope": null})));
        let comma_scope = mint(
            PRIVATE,
            &with(json!({"scope": format!("user:name, user:memberof:{ORG},user:email")})),
        );
        let by_globalid = mint(
            PRIVATE,
            &with(json!({"scope": null, "username": null, "globalid": ORG})),
        );
        let by_azp = mint(
            PRIVATE,
            &with(json!({"scope": null, "username": "bob", "azp": ORG})),
        );
        let huge = mint(PRIVATE, &with(json!({"pad": "x".repeat(MAX_TOKEN_BYTES)})));

        use AuthError::*;
        let cases: Vec<Case> = vec![
            ("no token", None, None, Err(NotJwt)),
            ("empty bearer", Some("Bearer ".into()), None, Err(NotJwt)),
            ("basic scheme", Some("Basic abc".into()), None, Err(NotJwt)),
            ("garbage", Some(bearer("not.a.jwt")), None, Err(Invalid)),
            ("one segment", Some(bearer("garbage")), None, Err(Invalid)),
            ("alg none", Some(bearer(&alg_none)), None, Err(Invalid)),
            (
                "HS384 with the public PEM",
                Some(bearer(&hs384)),
                None,
                Err(Invalid),
            ),
            (
                "ES256 header",
                Some(bearer(&es256_header)),
                None,
                Err(Invalid),
            ),
            (
                "tampered payload",
                Some(bearer(&tampered)),
                None,
                Err(Invalid),
            ),
            ("another key", Some(bearer(&other_key)), None, Err(Invalid)),
            ("expired at exp", Some(bearer(&expired)), None, Err(Expired)),
            ("missing exp", Some(bearer(&no_exp)), None, Err(Invalid)),
            ("string exp", Some(bearer(&string_exp)), None, Err(Invalid)),
            ("wrong issuer", Some(bearer(&wrong_iss)), None, Err(Invalid)),
            ("missing issuer", Some(bearer(&no_iss)), None, Err(Invalid)),
            (
                "wrong audience",
                Some(bearer(&wrong_aud)),
                None,
                Err(Invalid),
            ),
            (
                "wrong audience list",
                Some(bearer(&wrong_aud_list)),
                None,
                Err(Invalid),
            ),
            (
                "nbf in the future",
                Some(bearer(&future_nbf)),
                None,
                Err(Invalid),
            ),
            (
                "non-member",
                Some(bearer(&non_member)),
                None,
                Err(Unauthorized),
            ),
            (
                "scope prefix",
                Some(bearer(&prefix_member)),
                None,
                Err(Unauthorized),
            ),
            ("no scope", Some(bearer(&no_scope)), None, Err(Unauthorized)),
            ("over 8 KiB", Some(bearer(&huge)), None, Err(Invalid)),
            ("over 8 KiB cookie", None, Some(&huge), Err(Invalid)),
            ("member scope array", Some(bearer(&good)), None, Ok("alice")),
            ("comma scope", Some(bearer(&comma_scope)), None, Ok("alice")),
            ("globalid is org", Some(bearer(&by_globalid)), None, Ok(ORG)),
            ("azp is org", Some(bearer(&by_azp)), None, Ok("bob")),
            (
                "audience string",
                Some(bearer(&good_aud)),
                None,
                Ok("alice"),
            ),
            (
                "audience list",
                Some(bearer(&good_aud_list)),
                None,
                Ok("alice"),
            ),
            (
                "lowercase scheme",
                Some(format!("bearer {good}")),
                None,
                Ok("alice"),
            ),
            (
                "uppercase scheme",
                Some(format!("BEARER  {good} ")),
                None,
                Ok("alice"),
            ),
            ("cookie", None, Some(&good), Ok("alice")),
            (
                "basic header, cookie",
                Some("Basic abc".into()),
                Some(&good),
                Ok("alice"),
            ),
            (
                "bearer wins over cookie",
                Some(bearer(&good)),
                Some("junk"),
                Ok("alice"),
            ),
        ];
        for (name, authorization, cookie, expected) in cases {
            check(name, authorization.as_deref(), cookie, expected);
        }
    }

    #[test]
    fn verified_carries_exp_and_expiry_is_strict() {
        let rules = rules();
        let token = mint(PRIVATE, &member());
        assert_eq!(
            rules.verify(&token, NOW),
            Ok(Verified {
                exp: NOW + 3600,
                iat: None,
                user: "alice".into(),
                groups: vec![ORG.into()],
            })
        );
        let more = mint(
            PRIVATE,
            &with(
                json!({"scope": format!("user:memberof:{ORG}, user:memberof:{ORG}/ops,user:name")}),
            ),
        );
        let groups = rules.verify(&more, NOW).map(|v| v.groups);
        assert_eq!(groups, Ok(vec![ORG.to_string(), format!("{ORG}/ops")]));
        assert!(rules.verify(&token, NOW + 3599).is_ok());
        assert_eq!(rules.verify(&token, NOW + 3600), Err(AuthError::Expired));
    }

    #[test]
    fn messages_match_the_api() {
        assert!(
            AuthError::NotJwt
                .to_string()
                .contains("Authorization: Bearer <token>")
        );
        assert_eq!(AuthError::Expired.to_string(), "Your JWT has expired");
        assert_eq!(AuthError::Invalid.to_string(), "Your JWT is invalid");
        assert_eq!(AuthError::Unauthorized.to_string(), "Unauthorized");
    }

    #[test]
    fn keys_load_with_escaped_newlines_and_bad_keys_are_refused() {
        let escaped = PUBLIC.trim().replace('\n', "\\n");
        assert!(JwtRules::new(&escaped, ISSUER, ORG).is_ok());
        assert!(JwtRules::new(OTHER_PUBLIC, ISSUER, ORG).is_ok());
        let escaped_private = PRIVATE.trim().replace('\n', "\\n");
        assert!(mint_token(&escaped_private, &member()).is_ok());

        let failures = [
            JwtRules::new("", ISSUER, ORG).err(),
            JwtRules::new(PRIVATE, ISSUER, ORG).err(),
            JwtRules::new(PUBLIC, "", ORG).err(),
            JwtRules::new(PUBLIC, ISSUER, "").err(),
            JwtRules::new(
                "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----",
                ISSUER,
                ORG,
            )
            .err(),
            mint_token(PUBLIC, &member()).err(),
            mint_token(PRIVATE, &json!("not an object")).err(),
        ];
        for failure in &failures {
            assert!(failure.is_some(), "all of {failures:?} must fail");
        }

        // A well-formed SPKI whose point is not on the curve.
        let mut der = P384_SPKI_PREFIX.to_vec();
        der.push(0x04);
        der.extend_from_slice(&[0x01; P384_POINT_LEN - 1]);
        let off_curve = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
            STANDARD.encode(der)
        );
        assert!(matches!(
            JwtRules::new(&off_curve, ISSUER, ORG),
            Err(KeyError::InvalidKey { .. })
        ));
    }

    #[test]
    fn dev_key_pair_matches() {
        let private = include_str!("../../config/dev-jwt.key");
        let public = include_str!("../../config/dev-jwt.pub.pem");
        let rules = match JwtRules::new(public, ISSUER, ORG) {
            Ok(rules) => rules,
            Err(err) => panic!("dev key must load: {err}"),
        };
        let token = mint(private, &member());
        assert!(rules.verify(&token, NOW).is_ok());
    }
}
