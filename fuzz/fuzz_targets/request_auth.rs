//! The request-authentication path with arbitrary input: the credentials a request carries
//! (method, `Authorization`, the `Cookie` header and its `jwt` cookie, `Origin`, `Sec-Fetch-Site`, `Host`,
//! `Content-Type`) through `api::auth::request_token` (bearer/cookie choice and the cookie's
//! same-site rule), then the token through the verifier's header check and the ES384 rules.
//! Nothing may panic; a token the rules accept must carry the member scope.
#![no_main]

use std::sync::OnceLock;

use cockpit::api::auth::{Credentials, jwt_cookie, request_token};
use cockpit::auth::JwtRules;
use libfuzzer_sys::fuzz_target;

const PUBLIC: &str = include_str!("../../tests/support/keys/test_p384.pub.pem");

fn rules() -> &'static JwtRules {
    static RULES: OnceLock<JwtRules> = OnceLock::new();
    RULES.get_or_init(|| JwtRules::new(PUBLIC, "itsyouonline", "myorg").expect("test key"))
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xff (never valid UTF-8, so it cannot occur inside a field).
    let text: Vec<String> = data
        .split(|b| *b == 0xff)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let field = |n: usize| text.get(n).map(String::as_str);
    let methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    let method = methods[data.first().copied().unwrap_or(0) as usize % methods.len()];
    let request = Credentials {
        method,
        authorization: field(0),
        cookie: field(1).and_then(jwt_cookie),
        origin: field(2),
        sec_fetch_site: field(3),
        host: field(4),
        content_type: field(5),
    };
    let Ok(token) = request_token(&request) else {
        return;
    };
    if jsonwebtoken::decode_header(token).is_err() {
        return;
    }
    if let Ok(verified) = rules().verify(token, 1_800_000_000) {
        assert!(!verified.user.is_empty());
    }
});
