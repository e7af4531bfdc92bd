//! Password hashing and policy.
//!
//! New hashes are argon2id PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$...`), at least OWASP's
//! recommended parameters. Hashes written by Flask-AppBuilder through werkzeug
//! (`scrypt:32768:8:1$salt$hex`, `pbkdf2:sha256:600000$salt$hex`) verify too, and
//! [`Verification::needs_rehash`] tells the caller to store a fresh argon2id hash after a
//! successful login, so an imported FAB database upgrades itself user by user.
//!
//! Hashing costs tens of milliseconds on purpose; callers on an async runtime run it on a blocking
//! thread. [`PasswordHasher::verify_dummy`] spends the same work for unknown users, so response
//! time does not reveal which usernames exist.

use crate::error::ValidationError;
use crate::random::RandomSource;
use crate::secret::Secret;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB (OWASP minimum 19456 = 19 MiB).
    pub memory_kib: u32,
    /// Iterations (OWASP minimum 2 at 19 MiB).
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Errors from hashing (never from a wrong password, which is [`Verification::Mismatch`]).
#[derive(Debug, Error)]
pub enum HashError {
    /// The parameters are outside what argon2 accepts.
    #[error("invalid password hash parameters: {0}")]
    Params(String),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches. `needs_rehash` asks for a fresh argon2id hash to be stored.
    Match {
        /// Whether the stored hash is of another scheme or weaker parameters.
        needs_rehash: bool,
    },
    /// The password does not match, or the stored hash is unreadable.
    Mismatch,
}

impl Verification {
    /// Whether the password matched.
    pub fn is_match(self) -> bool {
        matches!(self, Verification::Match { .. })
    }

    /// Whether the password matched and the hash should be replaced.
    pub fn needs_rehash(self) -> bool {
        matches!(self, Verification::Match { needs_rehash: true })
    }
}

/// Hashes and verifies passwords with fixed parameters.
#[derive(Clone)]
pub struct PasswordHasher {
    params: HashParams,
    argon: Argon2<'static>,
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with `params`; computes the dummy hash used for unknown users.
    pub fn new(params: HashParams, rng: &dyn RandomSource) -> Result<Self, HashError> {
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let mut hasher = Self {
            params,
            argon,
            dummy_hash: String::new(),
        };
        hasher.dummy_hash = hasher.hash(&Secret::new("fab-dummy-password"), rng)?;
        Ok(hasher)
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// A new argon2id PHC string for `password`.
    pub fn hash(&self, password: &Secret, rng: &dyn RandomSource) -> Result<String, HashError> {
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Hash(e.to_string()))?;
        self.argon
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| HashError::Hash(e.to_string()))
    }

    /// Checks `password` against `stored` (argon2 PHC or werkzeug format).
    pub fn verify(&self, password: &Secret, stored: &str) -> Verification {
        if stored.starts_with('$') {
            return self.verify_phc(password, stored);
        }
        match werkzeug::verify(password.expose(), stored) {
            Some(true) => Verification::Match { needs_rehash: true },
            _ => Verification::Mismatch,
        }
    }

    /// Spends the work of one verification and returns nothing: used when the user is unknown.
    pub fn verify_dummy(&self, password: &Secret) {
        let _ = self.verify_phc(password, &self.dummy_hash);
    }

    fn verify_phc(&self, password: &Secret, stored: &str) -> Verification {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verification::Mismatch;
        };
        if self
            .argon
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_err()
        {
            return Verification::Mismatch;
        }
        let weaker = match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() < self.params.memory_kib
                    || p.t_cost() < self.params.iterations
                    || p.p_cost() < self.params.parallelism
            }
            Err(_) => true,
        };
        let not_argon2id = parsed.algorithm.as_str() != "argon2id";
        Verification::Match {
            needs_rehash: weaker || not_argon2id,
        }
    }
}

/// werkzeug's `generate_password_hash` formats, as Flask-AppBuilder stores them.
mod werkzeug {
    use super::*;

    /// Some(matched) for a readable werkzeug hash, None for an unknown format.
    pub(super) fn verify(password: &str, stored: &str) -> Option<bool> {
        let mut parts = stored.splitn(3, '$');
        let method = parts.next()?;
        let salt = parts.next()?;
        let expected_hex = parts.next()?;
        let expected = hex::decode(expected_hex).ok()?;
        let mut method_parts = method.split(':');
        let computed = match method_parts.next()? {
            "pbkdf2" => {
                let digest = method_parts.next().unwrap_or("sha256");
                let iterations: u32 = match method_parts.next() {
                    Some(n) => n.parse().ok()?,
                    None => 600_000,
                };
                // Bound the work an imported row can ask for.
                if iterations == 0 || iterations > 10_000_000 {
                    return None;
                }
                let (password, salt) = (password.as_bytes(), salt.as_bytes());
                match digest {
                    "sha256" => {
                        let mut out = vec![0u8; 32];
                        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                        out
                    }
                    "sha512" => {
                        let mut out = vec![0u8; 64];
                        pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                        out
                    }
                    _ => return None,
                }
            }
            "scrypt" => {
                let n: u64 = method_parts
                    .next()
                    .map_or(Some(32_768), |v| v.parse().ok())?;
                let r: u32 = method_parts.next().map_or(Some(8), |v| v.parse().ok())?;
                let p: u32 = method_parts.next().map_or(Some(1), |v| v.parse().ok())?;
                if !n.is_power_of_two() || n < 2 {
                    return None;
                }
                let log_n = u8::try_from(n.trailing_zeros()).ok()?;
                if log_n > 20 || r == 0 || r > 32 || p == 0 || p > 16 {
                    return None;
                }
                let params = scrypt::Params::new(log_n, r, p, 64).ok()?;
                let mut out = vec![0u8; 64];
                scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params, &mut out).ok()?;
                out
            }
            _ => return None,
        };
        Some(computed.len() == expected.len() && bool::from(computed.ct_eq(&expected)))
    }
}

/// The rules a new password must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters.
    pub min_length: usize,
    /// Most characters (bounds hashing work on attacker input).
    pub max_length: usize,
    /// Refuse passwords from the built-in list of the most common ones.
    pub refuse_common: bool,
    /// Flask-AppBuilder's complexity rule (`FAB_PASSWORD_COMPLEXITY_ENABLED`): two capitals, one
    /// of `!@#$&*`, two digits, three lower-case letters, ten characters.
    pub complexity: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 1024,
            refuse_common: true,
            complexity: false,
        }
    }
}

/// Passwords refused whatever the other rules say: the most frequent ones in public breach
/// corpora, plus obvious product and keyboard patterns. Compared case-insensitively.
const COMMON_PASSWORDS: &[&str] = &[
    "123456",
    "password",
    "12345678",
    "qwerty",
    "123456789",
    "12345",
    "1234",
    "111111",
    "1234567",
    "dragon",
    "123123",
    "baseball",
    "abc123",
    "football",
    "monkey",
    "letmein",
    "696969",
    "shadow",
    "master",
    "666666",
    "qwertyuiop",
    "123321",
    "mustang",
    "1234567890",
    "michael",
    "654321",
    "superman",
    "1qaz2wsx",
    "7777777",
    "121212",
    "000000",
    "qazwsx",
    "123qwe",
    "killer",
    "trustno1",
    "jordan",
    "jennifer",
    "zxcvbnm",
    "asdfgh",
    "hunter",
    "buster",
    "soccer",
    "harley",
    "batman",
    "andrew",
    "tigger",
    "sunshine",
    "iloveyou",
    "2000",
    "charlie",
    "robert",
    "thomas",
    "hockey",
    "ranger",
    "daniel",
    "starwars",
    "klaster",
    "112233",
    "george",
    "computer",
    "michelle",
    "jessica",
    "pepper",
    "1111",
    "zxcvbn",
    "555555",
    "11111111",
    "131313",
    "freedom",
    "777777",
    "pass",
    "maggie",
    "159753",
    "aaaaaa",
    "ginger",
    "princess",
    "joshua",
    "cheese",
    "amanda",
    "summer",
    "love",
    "ashley",
    "nicole",
    "chelsea",
    "biteme",
    "matthew",
    "access",
    "yankees",
    "987654321",
    "dallas",
    "austin",
    "thunder",
    "taylor",
    "matrix",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "qwerty123",
    "qwerty1234",
    "qwertyuiop123",
    "welcome",
    "welcome1",
    "welcome123",
    "admin",
    "admin123",
    "admin1234",
    "administrator",
    "root",
    "toor",
    "changeme",
    "changeme123",
    "secret",
    "secret123",
    "letmein123",
    "iloveyou123",
    "monkey123",
    "dragon123",
    "football123",
    "baseball123",
    "abc12345",
    "abcd1234",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1q2w3e4r5t6y",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "zaq12wsx",
    "!qaz2wsx",
    "asdfghjkl",
    "asdf1234",
    "qazwsxedc",
    "123abc",
    "aa123456",
    "123456a",
    "a123456",
    "1234qwer",
    "qwer1234",
    "11223344",
    "112233445566",
    "123456789a",
    "1234567890a",
    "0123456789",
    "9876543210",
    "123456789012",
    "1234512345",
    "12341234",
    "123123123",
    "987654321a",
    "passwordpassword",
    "superman123",
    "batman123",
    "starwars123",
    "trustno1!",
    "sunshine1",
    "princess1",
    "flask-appbuilder",
    "flaskappbuilder",
    "appbuilder",
    "fab-admin",
    "fabadmin",
    "your-very-long-random-secret-key-minimum-32-chars",
    "correcthorsebatterystaple",
    "letmeinplease",
    "iloveyouforever",
    "passwordisnotsecure",
    "mypassword",
    "mypassword1",
    "mypassword123",
    "newpassword",
    "newpassword1",
    "newpassword123",
    "temp1234",
    "temporary",
    "temppassword",
    "default",
    "default123",
    "guest",
    "guest123",
    "test",
    "test123",
    "test1234",
    "testing",
    "testing123",
    "user",
    "user123",
    "user1234",
    "login",
    "login123",
    "qwertyqwerty",
    "asdfasdf",
    "zxcvzxcv",
    "abcabc",
    "abcdef",
    "abcdefg",
    "abcdefgh",
    "abcdefghij",
    "abcdefghijkl",
    "aaaaaaaa",
    "aaaaaaaaaaaa",
    "00000000",
    "000000000000",
    "111111111111",
    "121212121212",
    "123123123123",
];

impl PasswordPolicy {
    /// Checks `password`; `context` holds values it must not equal (username, email).
    pub fn check(&self, password: &Secret, context: &[&str]) -> Result<(), ValidationError> {
        let value = password.expose();
        let length = password.char_count();
        if length < self.min_length {
            return Err(ValidationError::new(
                "password",
                format!("must be at least {} characters long", self.min_length),
            ));
        }
        if length > self.max_length {
            return Err(ValidationError::new(
                "password",
                format!("must be at most {} characters long", self.max_length),
            ));
        }
        let lowered = value.to_lowercase();
        if self.refuse_common && COMMON_PASSWORDS.iter().any(|c| *c == lowered) {
            return Err(ValidationError::new(
                "password",
                "is one of the most common passwords; choose another",
            ));
        }
        if context
            .iter()
            .filter(|c| !c.is_empty())
            .any(|c| c.to_lowercase() == lowered)
        {
            return Err(ValidationError::new(
                "password",
                "must not be the same as the username or email",
            ));
        }
        if self.complexity && !flask_appbuilder_complexity(value) {
            return Err(ValidationError::new(
                "password",
                "must have at least two capital letters, one special character (!@#$&*), two \
                 digits, three lower case letters and a minimal length of 10",
            ));
        }
        Ok(())
    }
}

fn flask_appbuilder_complexity(value: &str) -> bool {
    let count = |f: fn(&char) -> bool| value.chars().filter(f).count();
    count(char::is_ascii_uppercase) >= 2
        && value.chars().any(|c| "!@#$&*".contains(c))
        && count(char::is_ascii_digit) >= 2
        && count(char::is_ascii_lowercase) >= 3
        && value.chars().count() >= 10
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    fn fast_hasher() -> PasswordHasher {
        PasswordHasher::new(
            HashParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            &OsRandom,
        )
        .unwrap()
    }

    #[test]
    fn argon2id_round_trip() {
        let hasher = fast_hasher();
        let hash = hasher
            .hash(&Secret::new("correct horse"), &OsRandom)
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_eq!(
            hasher.verify(&Secret::new("correct horse"), &hash),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            hasher.verify(&Secret::new("wrong horse"), &hash),
            Verification::Mismatch
        );
    }

    #[test]
    fn weaker_argon2_hash_asks_for_rehash() {
        let weak = fast_hasher();
        let hash = weak.hash(&Secret::new("pw-for-rehash"), &OsRandom).unwrap();
        let strong = PasswordHasher::new(
            HashParams {
                memory_kib: 2048,
                iterations: 1,
                parallelism: 1,
            },
            &OsRandom,
        )
        .unwrap();
        assert!(
            strong
                .verify(&Secret::new("pw-for-rehash"), &hash)
                .needs_rehash()
        );
    }

    // Produced by werkzeug 3: generate_password_hash("secret-password", "pbkdf2:sha256:1000")
    // with salt "abcdefgh" is pbkdf2_hmac("sha256", b"secret-password", b"abcdefgh", 1000).hex().
    #[test]
    fn werkzeug_pbkdf2_hash_verifies_and_asks_for_rehash() {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"secret-password", b"abcdefgh", 1000, &mut out);
        let stored = format!("pbkdf2:sha256:1000$abcdefgh${}", hex::encode(out));
        let hasher = fast_hasher();
        assert_eq!(
            hasher.verify(&Secret::new("secret-password"), &stored),
            Verification::Match { needs_rehash: true }
        );
        assert_eq!(
            hasher.verify(&Secret::new("other-password"), &stored),
            Verification::Mismatch
        );
    }

    // A known vector: hashlib.scrypt(b"password", salt=b"NaCl", n=1024, r=8, p=16, dklen=64)
    // from RFC 7914 section 12.
    #[test]
    fn werkzeug_scrypt_hash_verifies_rfc7914_vector() {
        let expected = "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162\
                        2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640";
        let stored = format!("scrypt:1024:8:16$NaCl${expected}");
        let hasher = fast_hasher();
        assert!(hasher.verify(&Secret::new("password"), &stored).is_match());
        assert!(!hasher.verify(&Secret::new("Password"), &stored).is_match());
    }

    #[test]
    fn unreadable_hashes_never_match() {
        let hasher = fast_hasher();
        for stored in [
            "",
            "plain",
            "md5$x$y",
            "pbkdf2:sha256:0$s$00",
            "scrypt:1000:8:1$s$00",
            "$argon2id$junk",
        ] {
            assert_eq!(
                hasher.verify(&Secret::new("x"), stored),
                Verification::Mismatch,
                "{stored}"
            );
        }
    }

    #[test]
    fn policy_refuses_short_common_and_echoing_passwords() {
        let policy = PasswordPolicy::default();
        assert!(policy.check(&Secret::new("short"), &[]).is_err());
        assert!(policy.check(&Secret::new("Password1234"), &[]).is_err());
        assert!(
            policy
                .check(&Secret::new("alice-the-admin"), &["alice-the-admin"])
                .is_err()
        );
        assert!(
            policy
                .check(&Secret::new("tranquil-otter-42"), &["alice"])
                .is_ok()
        );
    }

    #[test]
    fn flask_appbuilder_complexity_rule() {
        let policy = PasswordPolicy {
            complexity: true,
            ..PasswordPolicy::default()
        };
        assert!(policy.check(&Secret::new("ABcde12!fghij"), &[]).is_ok());
        assert!(policy.check(&Secret::new("abcdefgh12!xyz"), &[]).is_err());
    }
}
