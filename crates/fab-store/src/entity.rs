//! sea-orm entities for the security tables, one module per table, named as the table.
//!
//! Flask-AppBuilder's tables keep its 32-bit `INTEGER` keys, so their models use `i32`; the
//! conversions to and from fab-core's `i64` ids live in the store modules. Timestamps are naive
//! UTC (`timestamp without time zone`), as FAB stores them.

pub(crate) mod ab_user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ab_user")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub first_name: String,
        pub last_name: String,
        pub username: String,
        pub password: Option<String>,
        pub active: Option<bool>,
        pub email: String,
        pub last_login: Option<DateTime>,
        pub login_count: Option<i32>,
        pub fail_login_count: Option<i32>,
        pub created_on: Option<DateTime>,
        pub changed_on: Option<DateTime>,
        pub created_by_fk: Option<i32>,
        pub changed_by_fk: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod ab_role {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ab_role")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod ab_permission {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ab_permission")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod ab_view_menu {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ab_view_menu")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod ab_permission_view {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ab_permission_view")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub permission_id: Option<i32>,
        pub view_menu_id: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {
        #[sea_orm(
            belongs_to = "super::ab_permission::Entity",
            from = "Column::PermissionId",
            to = "super::ab_permission::Column::Id"
        )]
        Permission,
        #[sea_orm(
            belongs_to = "super::ab_view_menu::Entity",
            from = "Column::ViewMenuId",
            to = "super::ab_view_menu::Column::Id"
        )]
        ViewMenu,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod ab_permission_view_role {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ab_permission_view_role")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub permission_view_id: Option<i32>,
        pub role_id: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {
        #[sea_orm(
            belongs_to = "super::ab_permission_view::Entity",
            from = "Column::PermissionViewId",
            to = "super::ab_permission_view::Column::Id"
        )]
        PermissionView,
        #[sea_orm(
            belongs_to = "super::ab_role::Entity",
            from = "Column::RoleId",
            to = "super::ab_role::Column::Id"
        )]
        Role,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod ab_user_role {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ab_user_role")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub user_id: Option<i32>,
        pub role_id: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {
        #[sea_orm(
            belongs_to = "super::ab_user::Entity",
            from = "Column::UserId",
            to = "super::ab_user::Column::Id"
        )]
        User,
        #[sea_orm(
            belongs_to = "super::ab_role::Entity",
            from = "Column::RoleId",
            to = "super::ab_role::Column::Id"
        )]
        Role,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod fab_session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "fab_session")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id_hash: String,
        pub user_id: i32,
        pub stage: String,
        pub created_at: DateTime,
        pub last_seen_at: DateTime,
        pub expires_at: DateTime,
        pub ip: Option<String>,
        pub user_agent: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod fab_audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "fab_audit")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: DateTime,
        pub event: String,
        pub outcome: String,
        pub actor_user_id: Option<i64>,
        pub actor_name: Option<String>,
        pub target: Option<String>,
        pub ip: Option<String>,
        pub user_agent: Option<String>,
        pub detail: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod fab_lockout {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "fab_lockout")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i32,
        pub known_failures: i32,
        pub known_last_failure_at: Option<DateTime>,
        pub known_locked_until: Option<DateTime>,
        pub other_failures: i32,
        pub other_last_failure_at: Option<DateTime>,
        pub other_locked_until: Option<DateTime>,
        pub known_ip: Option<String>,
        pub known_ip_at: Option<DateTime>,
        pub changed_at: DateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod fab_flag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "fab_flag")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub value: String,
        pub changed_at: DateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
