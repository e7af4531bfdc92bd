//! Randomness as a parameter: session ids, salts and generated passwords come from a
//! [`RandomSource`], so tests can seed it and production uses the operating system's CSPRNG.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A source of cryptographically strong random bytes.
pub trait RandomSource: Send + Sync + 'static {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// The operating system's CSPRNG (getrandom).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, dest: &mut [u8]) {
        // The OS generator failing is unrecoverable for a security server; there is no safe
        // fallback, so fail loudly rather than hand out predictable ids.
        #[allow(
            clippy::expect_used,
            reason = "no safe fallback exists when the OS CSPRNG fails"
        )]
        getrandom::fill(dest).expect("operating system random number generator failed");
    }
}

/// `bytes` random bytes, encoded as unpadded base64url.
pub fn random_token(rng: &dyn RandomSource, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rng.fill(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// A random password of `length` characters from an unambiguous alphabet (no 0/O, 1/l/I).
pub fn random_password(rng: &dyn RandomSource, length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(length);
    let mut byte = [0u8; 1];
    while out.len() < length {
        rng.fill(&mut byte);
        // Rejection sampling keeps the distribution uniform: 57 * 4 = 228 <= 255.
        let limit = (256 / ALPHABET.len()) * ALPHABET.len();
        if usize::from(byte[0]) < limit {
            out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_sized() {
        let a = random_token(&OsRandom, 32);
        let b = random_token(&OsRandom, 32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn passwords_use_the_alphabet() {
        let password = random_password(&OsRandom, 24);
        assert_eq!(password.len(), 24);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(!password.contains(['0', 'O', '1', 'l', 'I']));
    }
}
