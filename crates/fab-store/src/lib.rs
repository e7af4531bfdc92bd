//! SQL storage for fab: one sea-orm code path for SQLite (the embedded default) and PostgreSQL.
//!
//! The security schema keeps Flask-AppBuilder's tables and names (`ab_user`, `ab_role`,
//! `ab_permission`, `ab_view_menu`, `ab_permission_view`, `ab_permission_view_role`,
//! `ab_user_role`) so a FAB database can be migrated and FAB users recognise it; fab's own tables
//! (`fab_session`, `fab_audit`, `fab_lockout`, `fab_flag`) sit beside them. Migrations run only from `fab db upgrade`;
//! [`Database::schema_status`] is the read-only check `fab serve` makes at start-up.
//!
//! [`MemorySessionStore`] is here too: the in-process session store for single-instance setups.

mod audit;
mod database;
mod entity;
mod error;
mod flags;
mod lockout;
mod memory_sessions;
mod migration;
mod permissions;
mod sessions;
mod sql_store;
mod timestamp;
mod users;

pub use database::{Database, SchemaStatus};
pub use memory_sessions::MemorySessionStore;
pub use sql_store::SqlStore;
