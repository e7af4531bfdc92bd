//! The state every handler shares: the backends, the templates, and the keys derived from
//! SECRET_KEY.

use crate::AppParts;
use crate::SetupError;
use crate::jwt::JwtKeys;
use crate::templates::Templates;
use fab_core::secret::Secret;
use hmac::Mac;
use std::ops::Deref;
use std::sync::Arc;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub parts: AppParts,
    pub templates: Templates,
    pub jwt: JwtKeys,
    /// Key for signing flash messages; derived from SECRET_KEY so it is never the key itself.
    pub flash_key: Secret,
    /// How many CSP reports may still be recorded this minute.
    pub csp_reports: crate::csp_report::ReportBudget,
    /// When security.txt expires if no date is configured: fixed at start-up.
    pub security_txt_expires: chrono::DateTime<chrono::Utc>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(parts: AppParts) -> Result<Self, SetupError> {
        let templates = Templates::load(&parts.config)?;
        let jwt = JwtKeys::new(&derive_key(&parts.config.secret_key, "fab jwt v1"))
            .map_err(|e| SetupError::Keys(e.to_string()))?;
        let flash_key = derive_key(&parts.config.secret_key, "fab flash v1");
        let security_txt_expires = parts
            .config
            .edge
            .contact
            .expires
            .unwrap_or_else(|| parts.clock.now() + chrono::Duration::days(180));
        Ok(Self(Arc::new(Inner {
            parts,
            templates,
            jwt,
            flash_key,
            csp_reports: crate::csp_report::ReportBudget::default(),
            security_txt_expires,
        })))
    }
}

/// HMAC-SHA256(SECRET_KEY, purpose), hex: one independent key per purpose.
pub(crate) fn derive_key(secret: &Secret, purpose: &str) -> Secret {
    #[allow(
        clippy::expect_used,
        reason = "HMAC-SHA256 accepts keys of every length"
    )]
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(purpose.as_bytes());
    Secret::new(hex::encode(mac.finalize().into_bytes()))
}
