//! Page templates: minijinja (Jinja2 syntax, as Flask-AppBuilder's), built into the binary and
//! overridable file by file from `FAB_TEMPLATE_FOLDER`, as FAB users override theirs.
//!
//! HTML auto-escaping is forced for every template whatever its file extension, so a value from
//! the database can never become markup. Overrides are read and parsed once at start-up: a broken
//! override stops the server with the file's name instead of failing on the first request.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use fab_core::config::Config;
use minijinja::{AutoEscape, Environment};
use std::path::Path;

/// The built-in templates, by name.
const BUILT_IN: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("index.html", include_str!("../templates/index.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("logout.html", include_str!("../templates/logout.html")),
    ("error.html", include_str!("../templates/error.html")),
    (
        "users/list.html",
        include_str!("../templates/users/list.html"),
    ),
    (
        "users/form.html",
        include_str!("../templates/users/form.html"),
    ),
    (
        "users/show.html",
        include_str!("../templates/users/show.html"),
    ),
    (
        "users/reset_password.html",
        include_str!("../templates/users/reset_password.html"),
    ),
    (
        "users/userinfo.html",
        include_str!("../templates/users/userinfo.html"),
    ),
    (
        "roles/list.html",
        include_str!("../templates/roles/list.html"),
    ),
    (
        "roles/form.html",
        include_str!("../templates/roles/form.html"),
    ),
    (
        "roles/show.html",
        include_str!("../templates/roles/show.html"),
    ),
    (
        "security/list.html",
        include_str!("../templates/security/list.html"),
    ),
];

/// A template override that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct TemplateError {
    /// The template (file) name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// The loaded templates.
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub(crate) fn load(config: &Config) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in BUILT_IN {
            env.add_template(name, source).map_err(|e| TemplateError {
                name: (*name).to_owned(),
                message: e.to_string(),
            })?;
        }
        if let Some(folder) = &config.template_folder {
            load_overrides(&mut env, folder, folder)?;
        }
        Ok(Self { env })
    }

    /// Renders `name` with `context`.
    pub(crate) fn render(
        &self,
        name: &str,
        context: minijinja::Value,
    ) -> Result<String, crate::error::Failure> {
        self.env
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(|e| crate::error::Failure::Internal(format!("template {name}: {e:#}")))
    }
}

fn load_overrides(
    env: &mut Environment<'static>,
    root: &Path,
    dir: &Path,
) -> Result<(), TemplateError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TemplateError {
        name: dir.display().to_string(),
        message: format!("cannot read the template folder: {e}"),
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| TemplateError {
            name: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        if path.is_dir() {
            load_overrides(env, root, &path)?;
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("html") {
            continue;
        }
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let source = std::fs::read_to_string(&path).map_err(|e| TemplateError {
            name: name.clone(),
            message: e.to_string(),
        })?;
        env.add_template_owned(name.clone(), source)
            .map_err(|e| TemplateError {
                name,
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// An error answer whose page the error-page layer renders with the site's layout. Until then
/// (or if that rendering fails) it carries a minimal, escaped plain-text body.
#[derive(Debug, Clone)]
pub(crate) struct ErrorPage {
    pub message: String,
}

/// A response for `status` whose body becomes `error.html` (see [`ErrorPage`]).
pub(crate) fn render_error_page(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        Html(format!(
            "<!doctype html><title>{0}</title><h1>{0}</h1><p>{1}</p>",
            status.as_u16(),
            html_escape(message)
        )),
    )
        .into_response();
    response.extensions_mut().insert(ErrorPage {
        message: message.to_owned(),
    });
    response
}

/// Minimal HTML escaping for the fallback body.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_escaped_whatever_its_extension() {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.add_template("x.txt", "{{ v }}").unwrap();
        let out = env
            .get_template("x.txt")
            .unwrap()
            .render(minijinja::context! { v => "<script>" })
            .unwrap();
        assert_eq!(out, "&lt;script&gt;");
    }

    #[test]
    fn fallback_escape() {
        assert_eq!(
            html_escape("<a href='x'>&"),
            "&lt;a href=&#x27;x&#x27;&gt;&amp;"
        );
    }
}
