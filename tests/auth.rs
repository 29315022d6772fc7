//! JWT rules of `/ays/*` over real HTTP against the real binary, with tokens signed by a test
//! P-384 key (and forged ones): every refusal is 401 with its message, every accepted kind is 200.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use support::Cockpit;

const PRIVATE: &str = include_str!("support/keys/test_p384.pem");
const PUBLIC: &str = include_str!("support/keys/test_p384.pub.pem");
const OTHER_PRIVATE: &str = include_str!("support/keys/other_p384.pem");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Claims of a member of `myorg` (the test config's organization), valid for an hour.
fn member() -> Value {
    json!({"iss": "itsyouonline", "exp": now() + 3600, "username": "ann",
           "scope": ["user:memberof:myorg"]})
}

fn sign(claims: &Value) -> String {
    cockpit::auth::mint_token(PRIVATE, claims).expect("mint")
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().map(|m| m.remove(key));
    claims
}

/// `header.payload.` with `alg: none`.
fn unsigned(claims: &Value) -> String {
    let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", B64.encode(claims.to_string()))
}

/// HS384 with the server's *public* PEM as the HMAC secret (algorithm confusion).
fn hs384_with_public_pem(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(PUBLIC.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        claims,
        &key,
    )
    .expect("hs384")
}

/// A valid token whose payload was swapped after signing.
fn tampered() -> String {
    let token = sign(&with(member(), "scope", json!(["user:memberof:other"])));
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[1] = B64.encode(member().to_string());
    parts.join(".")
}

#[tokio::test]
async fn every_forged_or_unfit_token_is_refused_and_members_get_in() {
    let cockpit = Cockpit::start("");
    let http = reqwest::Client::new();
    let url = format!("{}/ays/repository", cockpit.api);

    let refused: Vec<(&str, Option<String>, &str)> = vec![
        (
            "missing token",
            None,
            "missing token: send the JWT as `Authorization: Bearer <token>` (or as the `jwt` cookie)",
        ),
        ("alg none", Some(unsigned(&member())), "Your JWT is invalid"),
        (
            "HS384 keyed with the public PEM",
            Some(hs384_with_public_pem(&member())),
            "Your JWT is invalid",
        ),
        (
            "another key's signature",
            Some(cockpit::auth::mint_token(OTHER_PRIVATE, &member()).expect("mint")),
            "Your JWT is invalid",
        ),
        ("tampered payload", Some(tampered()), "Your JWT is invalid"),
        (
            "expired",
            Some(sign(&with(member(), "exp", json!(now() - 10)))),
            "Your JWT has expired",
        ),
        (
            "no exp",
            Some(sign(&without(member(), "exp"))),
            "Your JWT is invalid",
        ),
        (
            "wrong issuer",
            Some(sign(&with(member(), "iss", json!("evil")))),
            "Your JWT is invalid",
        ),
        (
            "wrong audience",
            Some(sign(&with(member(), "aud", json!(["otherorg"])))),
            "Your JWT is invalid",
        ),
        (
            "non-member",
            Some(sign(&with(
                member(),
                "scope",
                json!(["user:memberof:otherorg"]),
            ))),
            "Unauthorized",
        ),
        (
            "member scope as a prefix trick",
            Some(sign(&with(
                member(),
                "scope",
                json!("user:memberof:myorgX"),
            ))),
            "Unauthorized",
        ),
        ("garbage", Some("not.a.jwt".into()), "Your JWT is invalid"),
        ("oversized", Some("a".repeat(9000)), "Your JWT is invalid"),
    ];
    for (what, token, message) in refused {
        let mut request = http.get(&url);
        if let Some(token) = &token {
            request = request.header("Authorization", format!("bearer {token}"));
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401, "{what}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], message, "{what}");
    }

    let accepted: Vec<(&str, String, &str)> = vec![
        ("member scope array", sign(&member()), "Bearer"),
        (
            "organization token (globalid)",
            sign(&without(
                with(member(), "globalid", json!("myorg")),
                "scope",
            )),
            "bearer",
        ),
        (
            "azp",
            sign(&without(with(member(), "azp", json!("myorg")), "scope")),
            "BEARER",
        ),
        (
            "comma-string scope",
            sign(&with(
                member(),
                "scope",
                json!("user:name,user:memberof:myorg,user:email"),
            )),
            "bearer",
        ),
        (
            "matching audience",
            sign(&with(member(), "aud", json!("myorg"))),
            "bearer",
        ),
    ];
    for (what, token, scheme) in accepted {
        let response = http
            .get(&url)
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{what}");
        // The same token again is served from the cache and still accepted.
        let again = http
            .get(&url)
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("request");
        assert_eq!(again.status(), 200, "{what} (cached)");
    }

    let cookie = http
        .get(&url)
        .header("Cookie", format!("jwt={}", sign(&member())))
        .send()
        .await
        .expect("request");
    assert_eq!(cookie.status(), 200, "jwt cookie");

    // Unauthenticated routes stay open.
    let health = http
        .get(format!("{}/health", cockpit.api))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
}
