//! The JSON API under `/api/v1`, in Flask-AppBuilder's shapes (`{"message"}` errors,
//! `{"count", "ids", "result"}` lists).

pub(crate) mod security;
