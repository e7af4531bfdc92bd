//! The schema migrations, applied by [`crate::Database::migrate`] (`fab db upgrade`) and never by
//! the server itself.
//!
//! `m0001_security_schema` creates Flask-AppBuilder's security tables with FAB's names and column
//! sizes, and fab's own `fab_session` and `fab_audit`. Every statement is `IF NOT EXISTS`, so the
//! migration also applies onto a database FAB created: its tables and rows are kept and only
//! what fab adds (case-insensitive unique indexes, fab's tables) is created. Migrations are
//! recorded in `fab_migrations`.
//!
//! `m0002_lockout_and_flags` adds `fab_lockout` (the per-account lockout counters, one row per
//! user, gone with the user) and `fab_flag` (named operational flags shared by every instance).
//! Migrations are append-only: a released one is never edited, a change is a new migration.

use sea_orm::DbBackend;
use sea_orm::sea_query::{
    ColumnDef, Expr, ForeignKey, ForeignKeyAction, ForeignKeyCreateStatement, Index,
    IndexCreateStatement, IntoIden, Table, TableCreateStatement,
};
use sea_orm::{ConnectionTrait, DbErr, DynIden};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

/// Name of the table recording applied migrations.
pub(crate) const MIGRATION_TABLE: &str = "fab_migrations";

/// Every migration fab knows, oldest first.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(SecuritySchema), Box::new(LockoutAndFlags)]
    }

    fn migration_table_name() -> DynIden {
        MIGRATION_TABLE.into_iden()
    }
}

/// The names of every migration fab knows, oldest first.
pub(crate) fn known_migrations() -> Vec<String> {
    Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

/// The tables Flask-AppBuilder creates, each with an `INTEGER` id drawn from `<table>_id_seq` on
/// PostgreSQL.
const FAB_TABLES: [&str; 7] = [
    "ab_permission",
    "ab_view_menu",
    "ab_role",
    "ab_user",
    "ab_permission_view",
    "ab_permission_view_role",
    "ab_user_role",
];

/// `m0001_security_schema`: FAB's security tables, fab's sessions and audit trail.
struct SecuritySchema;

impl MigrationName for SecuritySchema {
    fn name(&self) -> &str {
        "m0001_security_schema"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for SecuritySchema {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        if backend == DbBackend::Postgres {
            create_fab_sequences(manager).await?;
        }
        for table in security_tables(backend) {
            manager.create_table(table).await?;
        }
        if backend == DbBackend::Postgres {
            adopt_fab_sequences(manager).await?;
        }
        // Case-insensitive uniqueness, enforced by the database with the same lower() the
        // lookups use, so `Alice` and `alice` can never both exist. Written as SQL because
        // sea-query cannot render expression indexes for SQLite; the text is valid for both.
        let connection = manager.get_connection();
        for (name, column) in [
            ("ix_ab_user_username_lower", "username"),
            ("ix_ab_user_email_lower", "email"),
        ] {
            connection
                .execute_unprepared(&format!(
                    "CREATE UNIQUE INDEX IF NOT EXISTS {name} ON ab_user (lower({column}))"
                ))
                .await?;
        }
        for index in security_indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    // SQLite runs DDL transactionally too: a failed upgrade leaves no half-made schema.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// `m0002_lockout_and_flags`: account lockout state and operational flags.
struct LockoutAndFlags;

impl MigrationName for LockoutAndFlags {
    fn name(&self) -> &str {
        "m0002_lockout_and_flags"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for LockoutAndFlags {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in lockout_and_flag_tables() {
            manager.create_table(table).await?;
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

// PostgreSQL ids follow FAB's layout: FAB declares them as
// `Column(Integer, Sequence("ab_user_id_seq"), primary_key=True)`, so SQLAlchemy creates the
// sequence `<table>_id_seq` but no column default, and calls `nextval` in every INSERT itself.
// fab inserts without an id, so the id columns get `DEFAULT nextval('<table>_id_seq')`, on the
// tables fab creates and, by `adopt_fab_sequences`, on tables FAB created. This is PostgreSQL
// only because SQLite has no sequences: an `INTEGER PRIMARY KEY` is the rowid and numbers itself.

/// Creates `<table>_id_seq` for every FAB table that lacks one.
async fn create_fab_sequences(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let connection = manager.get_connection();
    for table in FAB_TABLES {
        connection
            .execute_unprepared(&format!("CREATE SEQUENCE IF NOT EXISTS {table}_id_seq"))
            .await?;
    }
    Ok(())
}

/// Ties each FAB table's id column to its sequence (the default SQLAlchemy never set).
async fn adopt_fab_sequences(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let connection = manager.get_connection();
    for table in FAB_TABLES {
        let sequence = format!("{table}_id_seq");
        connection
            .execute_unprepared(&format!("ALTER SEQUENCE {sequence} OWNED BY {table}.id"))
            .await?;
        connection
            .execute_unprepared(&format!(
                "ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{sequence}')"
            ))
            .await?;
        // Rows inserted with explicit ids (imports, restores) may have left the sequence
        // behind; move it past the largest id, never backwards (a reused id would attach old
        // audit records to a new user).
        connection
            .execute_unprepared(&format!(
                "SELECT setval('{sequence}', m) FROM (SELECT MAX(id) AS m FROM {table}) AS t \
                 WHERE m >= (SELECT last_value FROM {sequence})"
            ))
            .await?;
    }
    Ok(())
}

/// FAB's `id INTEGER PRIMARY KEY`: numbered by `<table>_id_seq` on PostgreSQL (see above), by
/// SQLite's AUTOINCREMENT (which, unlike a bare rowid, never reuses the id of a deleted row) there.
fn id_column(backend: DbBackend, table: &str) -> ColumnDef {
    let mut column = ColumnDef::new("id");
    column.integer().not_null().primary_key();
    if backend == DbBackend::Postgres {
        column.default(Expr::cust(format!("nextval('{table}_id_seq')")));
    } else {
        column.auto_increment();
    }
    column
}

fn timestamp(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).custom("timestamp").to_owned()
}

fn reference(from: (&'static str, &'static str), to: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from.0, from.1)
        .to(to, "id")
        .to_owned()
}

/// `(id, name varchar(len) unique not null)`, FAB's shape for roles, permissions and view menus.
fn named_table(backend: DbBackend, table: &'static str, length: u32) -> TableCreateStatement {
    Table::create()
        .table(table)
        .if_not_exists()
        .col(id_column(backend, table))
        .col(
            ColumnDef::new("name")
                .string_len(length)
                .not_null()
                .unique_key(),
        )
        .to_owned()
}

/// `(id, left fk, right fk, unique(left, right))`, FAB's shape for its link tables.
fn link_table(
    backend: DbBackend,
    table: &'static str,
    left: (&'static str, &'static str),
    right: (&'static str, &'static str),
) -> TableCreateStatement {
    Table::create()
        .table(table)
        .if_not_exists()
        .col(id_column(backend, table))
        .col(ColumnDef::new(left.0).integer())
        .col(ColumnDef::new(right.0).integer())
        .foreign_key(&mut reference((table, left.0), left.1))
        .foreign_key(&mut reference((table, right.0), right.1))
        .index(Index::create().unique().col(left.0).col(right.0))
        .to_owned()
}

fn security_tables(backend: DbBackend) -> Vec<TableCreateStatement> {
    let user = Table::create()
        .table("ab_user")
        .if_not_exists()
        .col(id_column(backend, "ab_user"))
        .col(ColumnDef::new("first_name").string_len(64).not_null())
        .col(ColumnDef::new("last_name").string_len(64).not_null())
        .col(
            ColumnDef::new("username")
                .string_len(64)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new("password").string_len(256))
        .col(ColumnDef::new("active").boolean())
        .col(
            ColumnDef::new("email")
                .string_len(320)
                .not_null()
                .unique_key(),
        )
        .col(timestamp("last_login"))
        .col(ColumnDef::new("login_count").integer())
        .col(ColumnDef::new("fail_login_count").integer())
        .col(timestamp("created_on"))
        .col(timestamp("changed_on"))
        .col(ColumnDef::new("created_by_fk").integer())
        .col(ColumnDef::new("changed_by_fk").integer())
        .foreign_key(&mut reference(("ab_user", "created_by_fk"), "ab_user"))
        .foreign_key(&mut reference(("ab_user", "changed_by_fk"), "ab_user"))
        .to_owned();
    let session = Table::create()
        .table("fab_session")
        .if_not_exists()
        .col(
            ColumnDef::new("id_hash")
                .char_len(64)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new("user_id").integer().not_null())
        .col(ColumnDef::new("stage").string_len(32).not_null())
        .col(timestamp("created_at").not_null())
        .col(timestamp("last_seen_at").not_null())
        .col(timestamp("expires_at").not_null())
        .col(ColumnDef::new("ip").string_len(64))
        .col(ColumnDef::new("user_agent").string_len(256))
        .foreign_key(
            &mut reference(("fab_session", "user_id"), "ab_user")
                .on_delete(ForeignKeyAction::Cascade)
                .to_owned(),
        )
        .to_owned();
    // No foreign key on actor_user_id: the audit trail outlives the users it names.
    let audit = Table::create()
        .table("fab_audit")
        .if_not_exists()
        .col(
            ColumnDef::new("id")
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(timestamp("at").not_null())
        .col(ColumnDef::new("event").string_len(64).not_null())
        .col(ColumnDef::new("outcome").string_len(16).not_null())
        .col(ColumnDef::new("actor_user_id").big_integer().null())
        .col(ColumnDef::new("actor_name").string_len(256))
        .col(ColumnDef::new("target").string_len(256))
        .col(ColumnDef::new("ip").string_len(64))
        .col(ColumnDef::new("user_agent").string_len(256))
        .col(ColumnDef::new("detail").text())
        .to_owned();
    vec![
        named_table(backend, "ab_permission", 100),
        named_table(backend, "ab_view_menu", 250),
        named_table(backend, "ab_role", 64),
        user,
        link_table(
            backend,
            "ab_permission_view",
            ("permission_id", "ab_permission"),
            ("view_menu_id", "ab_view_menu"),
        ),
        link_table(
            backend,
            "ab_permission_view_role",
            ("permission_view_id", "ab_permission_view"),
            ("role_id", "ab_role"),
        ),
        link_table(
            backend,
            "ab_user_role",
            ("user_id", "ab_user"),
            ("role_id", "ab_role"),
        ),
        session,
        audit,
    ]
}

/// `fab_lockout`: one row per account with lockout state (none while the state is the default),
/// deleted with its user; `fab_flag`: flag name, value and when it last changed.
fn lockout_and_flag_tables() -> Vec<TableCreateStatement> {
    let counter = |table: &mut TableCreateStatement, origin: &str| {
        table
            .col(
                ColumnDef::new(format!("{origin}_failures"))
                    .integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(format!("{origin}_last_failure_at"))
                    .custom("timestamp")
                    .null(),
            )
            .col(
                ColumnDef::new(format!("{origin}_locked_until"))
                    .custom("timestamp")
                    .null(),
            );
    };
    let mut lockout = Table::create()
        .table("fab_lockout")
        .if_not_exists()
        .col(ColumnDef::new("user_id").integer().not_null().primary_key())
        .to_owned();
    counter(&mut lockout, "known");
    counter(&mut lockout, "other");
    lockout
        .col(ColumnDef::new("known_ip").string_len(64).null())
        .col(timestamp("known_ip_at").null())
        .col(timestamp("changed_at").not_null())
        .foreign_key(
            &mut reference(("fab_lockout", "user_id"), "ab_user")
                .on_delete(ForeignKeyAction::Cascade)
                .to_owned(),
        );
    let flag = Table::create()
        .table("fab_flag")
        .if_not_exists()
        .col(
            ColumnDef::new("name")
                .string_len(64)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new("value").string_len(256).not_null())
        .col(timestamp("changed_at").not_null())
        .to_owned();
    vec![lockout, flag]
}

fn security_indexes() -> Vec<IndexCreateStatement> {
    let plain = |name: &'static str, table: &'static str, column: &'static str| {
        Index::create()
            .if_not_exists()
            .name(name)
            .table(table)
            .col(column)
            .to_owned()
    };
    vec![
        plain("ix_fab_session_user_id", "fab_session", "user_id"),
        plain("ix_fab_session_expires_at", "fab_session", "expires_at"),
        plain("ix_fab_audit_at", "fab_audit", "at"),
        plain("ix_fab_audit_event", "fab_audit", "event"),
    ]
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};

    fn ddl(backend: DbBackend) -> Vec<String> {
        security_tables(backend)
            .iter()
            .map(|table| match backend {
                DbBackend::Postgres => table.to_string(PostgresQueryBuilder),
                _ => table.to_string(SqliteQueryBuilder),
            })
            .collect()
    }

    #[test]
    fn fab_ids_come_from_fab_sequences_on_postgres_and_are_never_reused_on_sqlite() {
        let postgres = ddl(DbBackend::Postgres);
        let sqlite = ddl(DbBackend::Sqlite);
        for (index, table) in FAB_TABLES.iter().enumerate() {
            assert!(
                postgres[index].starts_with(&format!(r#"CREATE TABLE IF NOT EXISTS "{table}""#))
            );
            assert!(
                postgres[index].contains(&format!(
                    r#""id" integer NOT NULL DEFAULT (nextval('{table}_id_seq'))"#
                )),
                "{}",
                postgres[index]
            );
            assert!(sqlite[index].contains(r#""id" integer NOT NULL PRIMARY KEY AUTOINCREMENT"#));
        }
    }

    #[test]
    fn sessions_go_with_their_user_and_audit_records_stay() {
        for statement in ddl(DbBackend::Postgres) {
            if statement.contains(r#""fab_session""#) {
                assert!(statement.contains(r#"REFERENCES "ab_user" ("id") ON DELETE CASCADE"#));
            }
            if statement.contains(r#""fab_audit""#) {
                assert!(!statement.contains("REFERENCES"), "{statement}");
            }
        }
    }

    #[test]
    fn lockout_state_goes_with_its_user_and_flags_reference_nothing() {
        let statements: Vec<String> = lockout_and_flag_tables()
            .iter()
            .flat_map(|table| {
                [
                    table.to_string(PostgresQueryBuilder),
                    table.to_string(SqliteQueryBuilder),
                ]
            })
            .collect();
        for statement in &statements {
            assert!(
                statement.starts_with("CREATE TABLE IF NOT EXISTS"),
                "{statement}"
            );
            if statement.contains(r#""fab_lockout""#) {
                assert!(
                    statement.contains(r#"REFERENCES "ab_user" ("id") ON DELETE CASCADE"#),
                    "{statement}"
                );
                assert!(
                    statement.contains(r#""user_id" integer NOT NULL PRIMARY KEY"#),
                    "{statement}"
                );
            } else {
                assert!(statement.contains(r#""fab_flag""#), "{statement}");
                assert!(!statement.contains("REFERENCES"), "{statement}");
            }
        }
        assert_eq!(
            known_migrations(),
            ["m0001_security_schema", "m0002_lockout_and_flags"]
        );
    }
}
