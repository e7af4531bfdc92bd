//! Users as Flask-AppBuilder keeps them (`ab_user`), and the rules their fields follow.

use crate::error::ValidationError;
use crate::rbac::RoleId;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A user's primary key (`ab_user.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A role as seen from a user: its id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleRef {
    /// The role's id.
    pub id: RoleId,
    /// The role's name.
    pub name: String,
}

/// A user, with the bookkeeping columns Flask-AppBuilder keeps.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Primary key.
    pub id: UserId,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Unique login name.
    pub username: String,
    /// Unique email address.
    pub email: String,
    /// The stored password hash (PHC string or werkzeug format); never serialised.
    #[serde(skip)]
    pub password_hash: Secret,
    /// Inactive users cannot log in and lose their sessions and tokens.
    pub active: bool,
    /// Time of the last successful login.
    pub last_login: Option<DateTime<Utc>>,
    /// Number of successful logins.
    pub login_count: i64,
    /// Failed logins since the last success.
    pub fail_login_count: i64,
    /// Creation time.
    pub created_on: Option<DateTime<Utc>>,
    /// Last change time.
    pub changed_on: Option<DateTime<Utc>>,
    /// Who created the user.
    pub created_by: Option<UserId>,
    /// Who last changed the user.
    pub changed_by: Option<UserId>,
    /// The user's roles.
    pub roles: Vec<RoleRef>,
}

impl User {
    /// "First Last", or the username when both names are empty.
    pub fn display_name(&self) -> String {
        let name = format!("{} {}", self.first_name, self.last_name);
        let name = name.trim();
        if name.is_empty() {
            self.username.clone()
        } else {
            name.to_owned()
        }
    }

    /// How audit records name this user: `user:42 alice`.
    pub fn audit_target(&self) -> String {
        format!("user:{} {}", self.id, self.username)
    }

    /// Whether the user holds a role of that name.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|role| role.name == name)
    }
}

/// The fields that describe a user, as entered on a form, the API or the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Unique login name.
    pub username: String,
    /// Unique email address.
    pub email: String,
    /// Whether the user may log in.
    pub active: bool,
    /// Roles to hold (replaces the current set).
    pub roles: Vec<RoleId>,
}

/// A user to create: a validated profile and an already hashed password.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The user's fields.
    pub profile: UserProfile,
    /// The password hash to store.
    pub password_hash: Secret,
    /// Who creates the user (None for the CLI or first-run bootstrap).
    pub created_by: Option<UserId>,
}

/// Longest username Flask-AppBuilder's schema holds.
pub const USERNAME_MAX: usize = 64;
/// Longest first or last name Flask-AppBuilder's schema holds.
pub const NAME_MAX: usize = 64;
/// Longest email address (RFC 5321 path limit, FAB's column size).
pub const EMAIL_MAX: usize = 320;

impl UserProfile {
    /// Trims the fields and checks them, reporting every problem at once.
    pub fn normalised(mut self) -> Result<Self, Vec<ValidationError>> {
        self.first_name = self.first_name.trim().to_owned();
        self.last_name = self.last_name.trim().to_owned();
        self.username = self.username.trim().to_owned();
        self.email = self.email.trim().to_owned();
        let mut problems = Vec::new();
        if let Err(e) = validate_username(&self.username) {
            problems.push(e);
        }
        if let Err(e) = validate_email(&self.email) {
            problems.push(e);
        }
        for (field, value) in [
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
        ] {
            if value.chars().count() > NAME_MAX {
                problems.push(ValidationError::new(
                    field,
                    format!("at most {NAME_MAX} characters"),
                ));
            }
            if value.chars().any(char::is_control) {
                problems.push(ValidationError::new(
                    field,
                    "must not contain control characters",
                ));
            }
        }
        if self.first_name.is_empty() {
            problems.push(ValidationError::new("first_name", "is required"));
        }
        if self.last_name.is_empty() {
            problems.push(ValidationError::new("last_name", "is required"));
        }
        self.roles.sort();
        self.roles.dedup();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
    }
}

/// A username is 1..=64 characters of letters, digits and `.`, `_`, `-`, `@`, `+`.
pub fn validate_username(username: &str) -> Result<(), ValidationError> {
    if username.is_empty() {
        return Err(ValidationError::new("username", "is required"));
    }
    if username.chars().count() > USERNAME_MAX {
        return Err(ValidationError::new(
            "username",
            format!("at most {USERNAME_MAX} characters"),
        ));
    }
    if !username
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
    {
        return Err(ValidationError::new(
            "username",
            "only letters, digits and . _ - @ + are allowed",
        ));
    }
    Ok(())
}

/// An email address has one `@` with something on both sides, no spaces, and fits the column.
pub fn validate_email(email: &str) -> Result<(), ValidationError> {
    if email.is_empty() {
        return Err(ValidationError::new("email", "is required"));
    }
    if email.chars().count() > EMAIL_MAX {
        return Err(ValidationError::new(
            "email",
            format!("at most {EMAIL_MAX} characters"),
        ));
    }
    let mut parts = email.splitn(2, '@');
    let local = parts.next().unwrap_or_default();
    let domain = parts.next().unwrap_or_default();
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ValidationError::new(
            "email",
            "is not a valid email address",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> UserProfile {
        UserProfile {
            first_name: " Ada ".into(),
            last_name: "Lovelace".into(),
            username: "ada".into(),
            email: "ada@example.com".into(),
            active: true,
            roles: vec![RoleId(2), RoleId(1), RoleId(2)],
        }
    }

    #[test]
    fn profile_is_trimmed_and_roles_deduplicated() {
        let p = profile().normalised().unwrap();
        assert_eq!(p.first_name, "Ada");
        assert_eq!(p.roles, vec![RoleId(1), RoleId(2)]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut p = profile();
        p.username = "bad name".into();
        p.email = "nope".into();
        p.last_name = String::new();
        let problems = p.normalised().unwrap_err();
        let fields: Vec<_> = problems.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["username", "email", "last_name"]);
    }

    #[test]
    fn email_rules() {
        assert!(validate_email("a@b.co").is_ok());
        for bad in ["a@", "@b.co", "a@b", "a b@c.de", "a@b@c.de", "a@.com"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
