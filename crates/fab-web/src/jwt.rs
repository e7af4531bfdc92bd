//! API tokens in Flask-AppBuilder's shape: `POST /api/v1/security/login` returns an HS256 access
//! token (15 minutes by default) and optionally a refresh token.
//!
//! Tokens are signed with a key derived from SECRET_KEY. Expiry is checked against fab's
//! [`Clock`](fab_core::clock::Clock), not the system time, so it is testable; the token's user is
//! loaded on every request, so a disabled user's tokens stop working at once, and a token issued
//! before the user's last change (password reset, disable) is refused.

use chrono::{DateTime, Duration, Utc};
use fab_core::secret::Secret;
use fab_core::user::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenType {
    /// Calls the API.
    Access,
    /// Obtains a new access token.
    Refresh,
}

/// The claims fab signs (flask-jwt-extended's names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user id, as a string.
    pub sub: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Not before (seconds).
    pub nbf: i64,
    /// Expiry (seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Access or refresh.
    #[serde(rename = "type")]
    pub token_type: TokenType,
    /// Whether it came straight from a password login.
    pub fresh: bool,
}

/// The signing keys.
pub(crate) struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl JwtKeys {
    pub(crate) fn new(key: &Secret) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            encoding: EncodingKey::from_secret(key.expose().as_bytes())?,
            decoding: DecodingKey::from_secret(key.expose().as_bytes())?,
        })
    }

    /// A signed token.
    pub(crate) fn issue(
        &self,
        user: UserId,
        token_type: TokenType,
        fresh: bool,
        now: DateTime<Utc>,
        ttl: Duration,
        jti: String,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user.0.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: (now + ttl).timestamp(),
            jti,
            token_type,
            fresh,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid token of `expected` type at `now`; None for anything else
    /// (bad signature, other algorithm, expired, wrong type, malformed).
    pub(crate) fn verify(
        &self,
        token: &str,
        expected: TokenType,
        now: DateTime<Utc>,
    ) -> Option<(UserId, Claims)> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against fab's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        let claims = data.claims;
        let now = now.timestamp();
        if claims.token_type != expected || now >= claims.exp || now < claims.nbf {
            return None;
        }
        let user = claims.sub.parse::<i64>().ok().map(UserId)?;
        Some((user, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::new("k".repeat(40))).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn token_round_trip_and_expiry() {
        let token = keys()
            .issue(
                UserId(7),
                TokenType::Access,
                true,
                now(),
                Duration::minutes(15),
                "j".into(),
            )
            .unwrap();
        let (user, _) = keys().verify(&token, TokenType::Access, now()).unwrap();
        assert_eq!(user, UserId(7));
        assert!(keys().verify(&token, TokenType::Refresh, now()).is_none());
        assert!(
            keys()
                .verify(&token, TokenType::Access, now() + Duration::minutes(15))
                .is_none()
        );
    }

    #[test]
    fn token_signed_with_another_key_is_refused() {
        let other = JwtKeys::new(&Secret::new("o".repeat(40))).unwrap();
        let token = other
            .issue(
                UserId(1),
                TokenType::Access,
                true,
                now(),
                Duration::minutes(15),
                "j".into(),
            )
            .unwrap();
        assert!(keys().verify(&token, TokenType::Access, now()).is_none());
    }

    #[test]
    fn unsigned_token_is_refused() {
        // header {"alg":"none","typ":"JWT"}, claims of user 1, no signature
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTkwMDAwMDAwMCwianRpIjoiaiIsInR5cGUiOiJhY2Nlc3MiLCJmcmVzaCI6dHJ1ZX0.";
        assert!(keys().verify(token, TokenType::Access, now()).is_none());
    }
}
