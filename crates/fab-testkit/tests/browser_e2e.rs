//! One walk through fab's pages in a real headless Chromium, driven over the DevTools protocol
//! with real clicks and typing: log in, add a user, log out. Every console message, log entry and
//! uncaught exception the pages raise is collected and must be none; a Content-Security-Policy
//! violation shows up there, so this is also the check that the pages live within fab's CSP.
//!
//! The browser is Debian's chromium at `FAB_TEST_CHROMIUM` (default `/usr/bin/chromium`); nothing
//! downloads one. When it is missing the test fails, never skips. Every wait is bounded, so a hang
//! fails within seconds and says which step hung.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a step that cannot be taken fails the test, loudly and at once"
)]

use chromiumoxide::Page;
use chromiumoxide::browser::Browser;
use chromiumoxide::cdp::browser_protocol::log::EventEntryAdded;
use chromiumoxide::cdp::browser_protocol::page::EventLoadEventFired;
use chromiumoxide::cdp::js_protocol::runtime::{
    EventConsoleApiCalled, EventExceptionThrown, RemoteObject,
};
use fab_core::rbac::ADMIN_ROLE;
use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer};
use futures::StreamExt;
use std::fmt::Debug;
use std::future::Future;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// The browser used when `FAB_TEST_CHROMIUM` is not set.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// The flags the project's browser tests run Chromium with (DESIGN.md), besides the fresh
/// `--user-data-dir` and `--remote-debugging-port=0`, without which there is no DevTools endpoint.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long Chromium may take to start and open its DevTools endpoint.
const LAUNCH_WAIT: Duration = Duration::from_secs(30);
/// How long one step (a navigation, a click, a lookup) may take.
const STEP_WAIT: Duration = Duration::from_secs(15);
/// How long a closing browser may take before it is killed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

const NEW_USERNAME: &str = "grace";
const NEW_EMAIL: &str = "grace@example.com";
const NEW_PASSWORD: &str = "correct-horse-battery-42";

/// Awaits `future` for at most [`STEP_WAIT`]; a timeout or an error fails the test naming `what`.
async fn step<T, E: Debug>(what: &str, future: impl Future<Output = Result<T, E>>) -> T {
    match timeout(STEP_WAIT, future).await {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{what}: {error:?}"),
        Err(_) => panic!("{what}: no answer within {STEP_WAIT:?}"),
    }
}

/// A Chromium process of this test's own, on a fresh profile; killed when dropped.
struct Chromium {
    child: Child,
    /// The last lines Chromium wrote to stderr, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

fn remember(lines: &Mutex<Vec<String>>, line: String) {
    let mut lines = lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if lines.len() == 40 {
        lines.remove(0);
    }
    lines.push(line);
}

impl Chromium {
    /// Starts the browser; returns it and its DevTools WebSocket address.
    async fn launch() -> (Chromium, String) {
        let path =
            std::env::var("FAB_TEST_CHROMIUM").unwrap_or_else(|_| DEFAULT_CHROMIUM.to_owned());
        assert!(
            std::path::Path::new(&path).is_file(),
            "no Chromium at {path}: install Debian's package (apt-get install chromium) or point \
             FAB_TEST_CHROMIUM at a browser; this test fails rather than skips without one",
        );
        let profile = tempfile::tempdir().expect("a fresh Chromium profile directory");
        let mut child = Command::new(&path)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start Chromium at {path}: {error}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines =
            BufReader::new(child.stderr.take().expect("Chromium's stderr is piped")).lines();

        let sink = Arc::clone(&stderr);
        let endpoint = timeout(LAUNCH_WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let found = line
                    .strip_prefix("DevTools listening on ")
                    .map(|url| url.trim().to_owned());
                remember(&sink, line);
                if found.is_some() {
                    return found;
                }
            }
            None
        })
        .await;
        let chromium = Chromium {
            child,
            stderr,
            _profile: profile,
        };
        let endpoint = match endpoint {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => panic!(
                "Chromium at {path} ended before opening DevTools; its stderr:\n{}",
                chromium.stderr_tail()
            ),
            Err(_) => panic!(
                "Chromium at {path} opened no DevTools endpoint within {LAUNCH_WAIT:?}; its stderr:\n{}",
                chromium.stderr_tail()
            ),
        };
        // Keep reading, so a full pipe never stalls the browser and a failure can show the tail.
        let sink = Arc::clone(&chromium.stderr);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                remember(&sink, line);
            }
        });
        (chromium, endpoint)
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .join("\n")
    }

    /// Asks the browser to close, and kills it if it has not gone within [`CLOSE_WAIT`].
    async fn shut_down(mut self, mut browser: Browser) {
        let closed = timeout(CLOSE_WAIT, browser.close()).await;
        let exited = match closed {
            Ok(Ok(_)) => timeout(CLOSE_WAIT, self.child.wait()).await.is_ok(),
            Ok(Err(_)) | Err(_) => false,
        };
        if !exited {
            self.child.kill().await.expect("kill Chromium");
        }
    }
}

/// Everything the page reported on its console, its log, or as an uncaught exception.
#[derive(Clone, Default)]
struct Console {
    entries: Arc<Mutex<Vec<String>>>,
}

fn describe(args: &[RemoteObject]) -> String {
    args.iter()
        .map(|arg| match (&arg.value, &arg.description) {
            (Some(serde_json::Value::String(text)), _) => text.clone(),
            (Some(value), _) => value.to_string(),
            (None, Some(description)) => description.clone(),
            (None, None) => format!("<{:?}>", arg.r#type),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Console {
    fn push(&self, entry: String) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
    }

    fn snapshot(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Subscribes to the page's console calls, log entries (where the browser reports CSP
    /// violations and failed loads) and uncaught exceptions.
    async fn attach(page: &Page) -> Console {
        let console = Console::default();
        let mut calls = step(
            "listen for console calls",
            page.event_listener::<EventConsoleApiCalled>(),
        )
        .await;
        let sink = console.clone();
        tokio::spawn(async move {
            while let Some(call) = calls.next().await {
                sink.push(format!(
                    "console.{:?}: {}",
                    call.r#type,
                    describe(&call.args)
                ));
            }
        });
        let mut entries = step(
            "listen for log entries",
            page.event_listener::<EventEntryAdded>(),
        )
        .await;
        let sink = console.clone();
        tokio::spawn(async move {
            while let Some(added) = entries.next().await {
                let entry = &added.entry;
                sink.push(format!(
                    "log {:?}/{:?} at {}: {}",
                    entry.source,
                    entry.level,
                    entry.url.as_deref().unwrap_or("?"),
                    entry.text
                ));
            }
        });
        let mut exceptions = step(
            "listen for exceptions",
            page.event_listener::<EventExceptionThrown>(),
        )
        .await;
        let sink = console.clone();
        tokio::spawn(async move {
            while let Some(thrown) = exceptions.next().await {
                let details = &thrown.exception_details;
                let description = details
                    .exception
                    .as_ref()
                    .and_then(|e| e.description.clone())
                    .unwrap_or_default();
                sink.push(format!(
                    "exception at {}:{}: {} {description}",
                    details.url.as_deref().unwrap_or("?"),
                    details.line_number,
                    details.text
                ));
            }
        });
        console
    }

    /// Waits until an entry satisfies `wanted`.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        let found = timeout(STEP_WAIT, async {
            while !self.snapshot().iter().any(|entry| wanted(entry)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "{what} never reached the console collector: {:#?}",
            self.snapshot()
        );
    }
}

/// The page's URL, once it is `expected`.
async fn wait_for_url(page: &Page, expected: impl Fn(&str) -> bool, what: &str) -> String {
    let mut last = None;
    let reached = timeout(STEP_WAIT, async {
        loop {
            let url = page.url().await.ok().flatten();
            if url.as_deref().is_some_and(&expected) {
                return url.unwrap_or_default();
            }
            last = url;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    reached.unwrap_or_else(|_| panic!("{what}: still at {last:?} after {STEP_WAIT:?}"))
}

/// Opens `url` by navigating the page to it, as typing it into the address bar would.
async fn open(page: &Page, url: &str) {
    step(&format!("open {url}"), page.goto(url)).await;
}

/// Clicks the element at `selector` and waits for the page it leads to to finish loading.
async fn click_and_wait_for_load(page: &Page, selector: &str) {
    let mut loads = step(
        "listen for page loads",
        page.event_listener::<EventLoadEventFired>(),
    )
    .await;
    let element = step(&format!("find {selector}"), page.find_element(selector)).await;
    step(&format!("click {selector}"), element.click()).await;
    let loaded = timeout(STEP_WAIT, loads.next()).await;
    assert!(
        matches!(loaded, Ok(Some(_))),
        "clicking {selector} loaded no page within {STEP_WAIT:?}"
    );
}

/// Clicks into the input at `selector` and types `text` key by key.
async fn type_into(page: &Page, selector: &str, text: &str) {
    let input = step(&format!("find {selector}"), page.find_element(selector)).await;
    step(&format!("click {selector}"), input.click()).await;
    step(&format!("type into {selector}"), input.type_str(text)).await;
    let value = step(&format!("read {selector}"), input.property("value")).await;
    assert_eq!(
        value,
        Some(serde_json::Value::String(text.to_owned())),
        "{selector} holds what was typed"
    );
}

/// Whether the checkbox at `selector` is ticked.
async fn is_checked(page: &Page, selector: &str) -> bool {
    let checkbox = step(&format!("find {selector}"), page.find_element(selector)).await;
    let checked = step(&format!("read {selector}"), checkbox.property("checked")).await;
    checked == Some(serde_json::Value::Bool(true))
}

/// The visible text of the first element at `selector`.
async fn text_of(page: &Page, selector: &str) -> String {
    let element = step(&format!("find {selector}"), page.find_element(selector)).await;
    step(&format!("read {selector}"), element.inner_text())
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_logs_in_adds_a_user_and_logs_out_in_a_real_browser_without_console_errors() {
    let server = TestServer::start().await;
    let base = server.url.clone();
    let admin_role = server
        .store
        .role_by_name(ADMIN_ROLE)
        .await
        .unwrap()
        .expect("the Admin role exists");

    let (chromium, endpoint) = Chromium::launch().await;
    let (browser, mut handler) =
        step("connect to Chromium's DevTools", Browser::connect(endpoint)).await;
    let driver = tokio::spawn(async move {
        // A handler error means the DevTools connection is gone; the next step then fails.
        while let Some(Ok(())) = handler.next().await {}
    });
    let page = step("open a tab", browser.new_page("about:blank")).await;
    let console = Console::attach(&page).await;

    // Log in through the form.
    open(&page, &format!("{base}/login/")).await;
    assert_eq!(text_of(&page, "main h1").await, "Log in");
    type_into(&page, "input[name=username]", ADMIN_USERNAME).await;
    type_into(&page, "input[name=password]", ADMIN_PASSWORD).await;
    click_and_wait_for_load(&page, r#"form[action="/login/"] button[type=submit]"#).await;
    wait_for_url(
        &page,
        |url| url == format!("{base}/"),
        "login lands on the home page",
    )
    .await;
    let welcome = text_of(&page, "main").await;
    assert!(
        welcome.contains("Welcome,"),
        "the home page greets the admin: {welcome}"
    );
    assert!(text_of(&page, "header.topbar").await.contains("Log out"));

    // The user list, and its "Add user" button.
    open(&page, &format!("{base}/users/list/")).await;
    wait_for_url(
        &page,
        |url| url == format!("{base}/users/list/"),
        "the user list opens",
    )
    .await;
    assert!(text_of(&page, "table").await.contains(ADMIN_USERNAME));
    click_and_wait_for_load(&page, r#"a[href="/users/add/"]"#).await;
    wait_for_url(
        &page,
        |url| url == format!("{base}/users/add/"),
        "Add user opens the form",
    )
    .await;
    assert_eq!(text_of(&page, "main h1").await, "Add user");

    // Fill in the form the way a person would.
    let form = r#"form[action="/users/add/"]"#;
    type_into(&page, &format!("{form} input[name=first_name]"), "Grace").await;
    type_into(&page, &format!("{form} input[name=last_name]"), "Hopper").await;
    type_into(&page, &format!("{form} input[name=username]"), NEW_USERNAME).await;
    type_into(&page, &format!("{form} input[name=email]"), NEW_EMAIL).await;
    let active = format!("{form} input[name=active]");
    if !is_checked(&page, &active).await {
        let checkbox = step(
            "find the active checkbox",
            page.find_element(active.as_str()),
        )
        .await;
        step("tick active", checkbox.click()).await;
    }
    assert!(is_checked(&page, &active).await, "the active box is ticked");
    // The role is ticked by clicking its label, found by the role's name as shown.
    let label = step(
        "find the Admin role's label",
        page.find_xpath(format!(
            "//form[@action='/users/add/']//label[normalize-space()='{ADMIN_ROLE}']"
        )),
    )
    .await;
    let checkbox_id = step("read the label's target", label.attribute("for"))
        .await
        .expect("the role label names its checkbox");
    let role_checkbox = format!("{form} input#{checkbox_id}");
    assert!(
        !is_checked(&page, &role_checkbox).await,
        "no role is ticked before the click"
    );
    step("tick the Admin role", label.click()).await;
    assert!(
        is_checked(&page, &role_checkbox).await,
        "clicking the label ticks the role"
    );
    type_into(&page, &format!("{form} input[name=password]"), NEW_PASSWORD).await;
    type_into(
        &page,
        &format!("{form} input[name=conf_password]"),
        NEW_PASSWORD,
    )
    .await;
    click_and_wait_for_load(&page, &format!("{form} button[type=submit]")).await;

    // The new user's page.
    let shown = wait_for_url(
        &page,
        |url| url.starts_with(&format!("{base}/users/show/")),
        "saving the form shows the new user",
    )
    .await;
    assert_eq!(
        text_of(&page, "main h1").await,
        format!("User {NEW_USERNAME}")
    );
    assert_eq!(
        text_of(&page, ".flash").await,
        format!("User {NEW_USERNAME} created.")
    );
    let details = text_of(&page, "dl.details").await;
    for expected in ["Grace Hopper", NEW_EMAIL, ADMIN_ROLE] {
        assert!(
            details.contains(expected),
            "the user's page shows {expected}: {details}"
        );
    }

    // The store really holds the user, as typed, and the typed password logs in.
    let user = server
        .store
        .user_by_login(NEW_USERNAME)
        .await
        .unwrap()
        .expect("the browser created the user");
    assert_eq!(shown, format!("{base}/users/show/{}", user.id));
    assert_eq!(
        (user.first_name.as_str(), user.last_name.as_str()),
        ("Grace", "Hopper")
    );
    assert_eq!(user.email, NEW_EMAIL);
    assert!(user.active);
    assert_eq!(
        user.roles.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![admin_role.id]
    );
    assert_eq!(
        server
            .client()
            .login(NEW_USERNAME, NEW_PASSWORD)
            .await
            .status(),
        303
    );

    // Browse every admin page under the default policy; none may raise a violation.
    let viewer_role = server.store.role_by_name("Public").await.unwrap().unwrap();
    for path in [
        "/".to_owned(),
        "/users/list/?search=grace".to_owned(),
        format!("/users/edit/{}", user.id),
        format!("/users/resetpasswords/{}", user.id),
        "/users/userinfo/".to_owned(),
        "/resetmypassword/form".to_owned(),
        "/roles/list/".to_owned(),
        "/roles/add/".to_owned(),
        format!("/roles/show/{}", viewer_role.id.0),
        format!("/roles/edit/{}", viewer_role.id.0),
        "/permissions/list/".to_owned(),
        "/viewmenus/list/".to_owned(),
        "/permissionviews/list/".to_owned(),
    ] {
        open(&page, &format!("{base}{path}")).await;
        wait_for_url(&page, |url| url.ends_with(&path), &format!("{path} opens")).await;
        let heading = text_of(&page, "main h1").await;
        assert!(!heading.is_empty(), "{path} rendered a page");
    }

    // Log out with the top bar's button.
    click_and_wait_for_load(
        &page,
        r#"header.topbar form[action="/logout/"] button[type=submit]"#,
    )
    .await;
    wait_for_url(
        &page,
        |url| url == format!("{base}/login/"),
        "logging out lands on the login page",
    )
    .await;
    assert_eq!(text_of(&page, ".flash").await, "You have been logged out.");
    let cookies = step("read the browser's cookies", page.get_cookies()).await;
    assert!(
        cookies.iter().all(|c| c.name != "fab_session"),
        "logout removed the session cookie: {cookies:?}"
    );
    open(&page, &format!("{base}/users/list/")).await;
    wait_for_url(
        &page,
        |url| url == format!("{base}/login/?next=%2Fusers%2Flist%2F"),
        "after logout the user list sends the browser to the login page",
    )
    .await;
    assert_eq!(text_of(&page, "main h1").await, "Log in");
    assert!(text_of(&page, "header.topbar").await.contains("Log in"));

    // Give late reports (a deferred script, a violation) the time to arrive, then check that
    // the whole walk raised nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let raised = console.snapshot();
    assert!(
        raised.is_empty(),
        "the pages raised console messages or exceptions: {raised:#?}"
    );
    let reports = server
        .store
        .recent_audit(10, Some("security.csp_violation"))
        .await
        .unwrap();
    assert!(reports.is_empty(), "no CSP report reached fab: {reports:?}");

    // Probe: the collector does see what it is there to catch. An inline script (which fab's
    // CSP must refuse), a console call and an uncaught exception each reach it.
    let probe = r#"(() => {
        const script = document.createElement("script");
        script.textContent = "document.title = 'inline script ran'";
        document.head.appendChild(script);
        console.error("fab-e2e-probe");
        setTimeout(() => { throw new Error("fab-e2e-probe"); }, 0);
        return document.title;
    })()"#;
    let title: String = step("run the collector probe", page.evaluate(probe))
        .await
        .into_value()
        .expect("the probe returns the title");
    assert_ne!(
        title, "inline script ran",
        "the CSP refused the inline script"
    );
    console
        .wait_for("the CSP violation", |e| {
            e.contains("Content Security Policy")
        })
        .await;
    console
        .wait_for("the console call", |e| {
            e.starts_with("console.") && e.contains("fab-e2e-probe")
        })
        .await;
    console
        .wait_for("the exception", |e| {
            e.starts_with("exception") && e.contains("fab-e2e-probe")
        })
        .await;

    chromium.shut_down(browser).await;
    driver.abort();
    server.stop().await;
}
