//! Role-based access control in Flask-AppBuilder's model.
//!
//! A *permission* (`can_list`, `can_add`, `menu_access`, ...) is granted on a *view menu*
//! (`UserDBModelView`, `List Users`, ...); the pair is a [`Grant`]. Roles hold grants, users hold
//! roles, and a request is allowed when any of the user's roles holds the grant the route declares.
//! Anonymous requests are evaluated against the Public role. Admin holds every declared grant and
//! is kept in sync at start-up.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Name of the built-in role that holds every permission.
pub const ADMIN_ROLE: &str = "Admin";
/// Name of the built-in role whose permissions anonymous users get.
pub const PUBLIC_ROLE: &str = "Public";

/// A role's primary key (`ab_role.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleId(pub i64);

/// A permission-on-view-menu primary key (`ab_permission_view.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PermissionViewId(pub i64);

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// Primary key.
    pub id: RoleId,
    /// Unique name.
    pub name: String,
}

/// A permission on a view menu: the unit a route requires and a role holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    /// Permission name (`ab_permission.name`), e.g. `can_list`.
    pub permission: String,
    /// View menu name (`ab_view_menu.name`), e.g. `UserDBModelView`.
    pub view_menu: String,
}

impl Grant {
    /// The grant of `permission` on `view_menu`.
    pub fn new(permission: impl Into<String>, view_menu: impl Into<String>) -> Self {
        Self {
            permission: permission.into(),
            view_menu: view_menu.into(),
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.permission, self.view_menu)
    }
}

/// A stored permission-on-view-menu row, with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PermissionView {
    /// Primary key.
    pub id: PermissionViewId,
    /// The grant it represents.
    pub grant: Grant,
}

/// The grants a principal holds, for fast evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionSet {
    grants: HashSet<Grant>,
    /// Whether the Admin role is among the roles (Admin is allowed everything declared).
    admin: bool,
}

impl PermissionSet {
    /// A set from grants; `admin` marks a holder of the Admin role.
    pub fn new(grants: impl IntoIterator<Item = Grant>, admin: bool) -> Self {
        Self {
            grants: grants.into_iter().collect(),
            admin,
        }
    }

    /// The empty set: nothing allowed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `grant` is allowed.
    pub fn allows(&self, grant: &Grant) -> bool {
        self.admin || self.grants.contains(grant)
    }

    /// Whether `permission` on `view_menu` is allowed.
    pub fn allows_names(&self, permission: &str, view_menu: &str) -> bool {
        self.admin
            || self
                .grants
                .iter()
                .any(|g| g.permission == permission && g.view_menu == view_menu)
    }

    /// Whether this set belongs to an Admin.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The explicit grants.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter()
    }
}

/// A role name is 1..=64 printable characters.
pub fn validate_role_name(name: &str) -> Result<(), crate::ValidationError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(crate::ValidationError::new("name", "is required"));
    }
    if trimmed.chars().count() > 64 {
        return Err(crate::ValidationError::new("name", "at most 64 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(crate::ValidationError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// One role in Flask-AppBuilder's `export-roles` JSON format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleExport {
    /// Role name.
    pub name: String,
    /// Its grants.
    pub permissions: Vec<ExportedGrant>,
}

/// A grant in Flask-AppBuilder's export format:
/// `{"permission": {"name": ...}, "view_menu": {"name": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedGrant {
    /// The permission.
    pub permission: NamedObject,
    /// The view menu.
    pub view_menu: NamedObject,
}

/// `{"name": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedObject {
    /// The name.
    pub name: String,
}

impl From<&Grant> for ExportedGrant {
    fn from(grant: &Grant) -> Self {
        Self {
            permission: NamedObject {
                name: grant.permission.clone(),
            },
            view_menu: NamedObject {
                name: grant.view_menu.clone(),
            },
        }
    }
}

impl From<&ExportedGrant> for Grant {
    fn from(grant: &ExportedGrant) -> Self {
        Grant::new(grant.permission.name.clone(), grant.view_menu.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_is_allowed_everything() {
        let set = PermissionSet::new([], true);
        assert!(set.allows(&Grant::new("can_delete", "UserDBModelView")));
    }

    #[test]
    fn grant_must_match_both_names() {
        let set = PermissionSet::new([Grant::new("can_list", "UserDBModelView")], false);
        assert!(set.allows(&Grant::new("can_list", "UserDBModelView")));
        assert!(!set.allows(&Grant::new("can_list", "RoleModelView")));
        assert!(!set.allows(&Grant::new("can_add", "UserDBModelView")));
        assert!(!PermissionSet::none().allows(&Grant::new("can_list", "UserDBModelView")));
    }

    #[test]
    fn export_format_matches_flask_appbuilder() {
        let export = RoleExport {
            name: "Viewer".into(),
            permissions: vec![ExportedGrant::from(&Grant::new(
                "can_list",
                "UserDBModelView",
            ))],
        };
        let json = serde_json::to_value(&export).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "Viewer", "permissions": [
                {"permission": {"name": "can_list"}, "view_menu": {"name": "UserDBModelView"}}
            ]})
        );
    }
}
