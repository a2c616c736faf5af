//! [`DashboardSettings`]: the `DASHBOARD_*` variables. The session settings
//! (`SESSION_*`) are the layer's and are read by `SessionLayer::from_env()`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use axum_extra::extract::cookie::Key;
use cloakroom::core::config::{ConfigError, Env, Settings, parse_or};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// `DASHBOARD_ADDR` when unset.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";
/// `DASHBOARD_USERS` when unset: two demo accounts, as a devstack has.
pub const DEFAULT_USERS: &str = "admin:admin,demo:demo";
/// `DASHBOARD_PROJECTS` when unset: devstack's project names.
pub const DEFAULT_PROJECTS: &str = "admin,demo,alt_demo";
/// `DASHBOARD_USER_PROJECTS` when unset: devstack's users start in their
/// own projects. Unlike a value that is set, entries for a user or a
/// project that is not configured are skipped.
pub const DEFAULT_USER_PROJECTS: &str = "admin=admin,demo=demo";
/// `DASHBOARD_CATALOG_BYTES` when unset: a service catalog of about 10 KB of
/// JSON, a middling Horizon deployment (real ones are 6-40 KB).
pub const DEFAULT_CATALOG_BYTES: usize = 10 * 1024;
/// The largest catalog accepted: far above any real one, small enough that
/// a typo cannot make every login build a huge session.
pub const MAX_CATALOG_BYTES: usize = 8 * 1024 * 1024;
/// `DASHBOARD_SESSION_TIMEOUT` when unset: Horizon's `SESSION_TIMEOUT`.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(3600);
/// `DASHBOARD_LOGIN_FAILURES_PER_USER` when unset.
pub const DEFAULT_LOGIN_FAILURES_PER_USER: u32 = 5;
/// `DASHBOARD_LOGIN_FAILURES_PER_ADDRESS` when unset: more than per user,
/// as one address may be a NAT or an office proxy with many people behind it.
pub const DEFAULT_LOGIN_FAILURES_PER_ADDRESS: u32 = 20;
/// `DASHBOARD_LOGIN_WINDOW` when unset: five minutes.
pub const DEFAULT_LOGIN_WINDOW: Duration = Duration::from_secs(300);
/// `DASHBOARD_REQUEST_TIMEOUT` when unset: long enough for a slow backend to
/// answer within its own timeouts, short enough that a stuck request does
/// not hold a connection for minutes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the dashboard itself is configured with.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `DASHBOARD_ADDR` | `127.0.0.1:8000` | address to listen on |
/// | `DASHBOARD_USERS` | `admin:admin,demo:demo` | demo accounts, `name:password` separated by commas |
/// | `DASHBOARD_PROJECTS` | `admin,demo,alt_demo` | projects every user can switch between; the first is current after login, unless the user has a default project |
/// | `DASHBOARD_USER_PROJECTS` | `admin=admin,demo=demo` | each user's default project, `name=project` separated by commas; names from `DASHBOARD_USERS`, projects from `DASHBOARD_PROJECTS` |
/// | `DASHBOARD_CATALOG_BYTES` | `10240` | size of the JSON service catalog stored in each session (0 to 8 MiB) |
/// | `DASHBOARD_SESSION_TIMEOUT` | `3600` | idle timeout in seconds, refreshed on every request (Horizon's `SESSION_TIMEOUT`) |
/// | `DASHBOARD_LOGIN_FAILURES_PER_USER` | `5` | failed logins for one user name within the window after which its logins answer 429 |
/// | `DASHBOARD_LOGIN_FAILURES_PER_ADDRESS` | `20` | the same for one client address (an IPv6 /64) |
/// | `DASHBOARD_LOGIN_WINDOW` | `300` | the throttling window in seconds, counted from the first failure |
/// | `DASHBOARD_REQUEST_TIMEOUT` | `30` | seconds a request may take before it is answered 503 with an error page |
/// | `SESSION_SECRET_KEY` | unset | also the layer's; when set, the login form's CSRF cookie is signed with a key derived from it (see [`CsrfKey`]) |
///
/// ```
/// use dashboard::DashboardSettings;
/// use cloakroom::core::config::from_pairs;
///
/// let settings = DashboardSettings::from_settings(&from_pairs([
///     ("DASHBOARD_USERS", "ada:lovelace"),
///     ("DASHBOARD_CATALOG_BYTES", "2048"),
/// ]))?;
/// assert_eq!(settings.users[0].name(), "ada");
/// assert_eq!(settings.catalog_bytes, 2048);
/// assert_eq!(settings.projects, ["admin", "demo", "alt_demo"]);
/// # Ok::<(), cloakroom::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DashboardSettings {
    /// `DASHBOARD_ADDR`.
    pub addr: String,
    /// `DASHBOARD_USERS`.
    pub users: Vec<DemoUser>,
    /// `DASHBOARD_PROJECTS`.
    pub projects: Vec<String>,
    /// `DASHBOARD_CATALOG_BYTES`.
    pub catalog_bytes: usize,
    /// `DASHBOARD_SESSION_TIMEOUT`.
    pub session_timeout: Duration,
    /// `DASHBOARD_LOGIN_FAILURES_PER_USER`.
    pub login_failures_per_user: u32,
    /// `DASHBOARD_LOGIN_FAILURES_PER_ADDRESS`.
    pub login_failures_per_address: u32,
    /// `DASHBOARD_LOGIN_WINDOW`.
    pub login_window: Duration,
    /// `DASHBOARD_REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// Signs the login form's CSRF cookie.
    pub csrf_key: CsrfKey,
}

/// The key that signs the login form's CSRF cookie.
///
/// Derived from `SESSION_SECRET_KEY` when that is set, so that every
/// process of a deployment accepts the forms the others served; otherwise
/// made at startup, and a login form opened before a restart is refused
/// once (403; reloading the page gives a new one).
#[derive(Clone)]
pub struct CsrfKey(pub(crate) Key);

impl CsrfKey {
    /// A key from the OS random number generator.
    pub fn random() -> Self {
        let mut bytes = [0u8; 64];
        Self(
            SystemRandom::new()
                .fill(&mut bytes)
                .map_or_else(|_| Key::generate(), |()| Key::from(&bytes)),
        )
    }

    /// A key derived from `secret`, of its own: knowing it tells nothing
    /// about the keys the session layer derives from the same secret.
    pub fn from_secret(secret: &str) -> Self {
        // HMAC-SHA512: the 64 bytes the cookie jar's key is made of.
        let master = hmac::Key::new(hmac::HMAC_SHA512, secret.as_bytes());
        let tag = hmac::sign(&master, b"cloakroom dashboard: login form CSRF cookie");
        Self(Key::from(tag.as_ref()))
    }
}

impl fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfKey(REDACTED)")
    }
}

impl Default for DashboardSettings {
    fn default() -> Self {
        let users = parse_users(DEFAULT_USERS).unwrap_or_default();
        let projects = parse_list(DEFAULT_PROJECTS).unwrap_or_default();
        Self {
            addr: DEFAULT_ADDR.to_owned(),
            users: with_projects(users.clone(), &projects, DEFAULT_USER_PROJECTS, false)
                .unwrap_or(users),
            projects,
            catalog_bytes: DEFAULT_CATALOG_BYTES,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            login_failures_per_user: DEFAULT_LOGIN_FAILURES_PER_USER,
            login_failures_per_address: DEFAULT_LOGIN_FAILURES_PER_ADDRESS,
            login_window: DEFAULT_LOGIN_WINDOW,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            csrf_key: CsrfKey::random(),
        }
    }
}

impl DashboardSettings {
    /// Reads the `DASHBOARD_*` variables from the environment.
    ///
    /// # Errors
    /// When a variable has a value that is not accepted; the error names it.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_settings(&Env)
    }

    /// Reads the `DASHBOARD_*` settings from any source (a map, in tests).
    ///
    /// # Errors
    /// When a setting has a value that is not accepted; the error names it.
    pub fn from_settings(s: &dyn Settings) -> Result<Self, ConfigError> {
        let addr = s
            .get("DASHBOARD_ADDR")
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let raw_users = s.get("DASHBOARD_USERS");
        let users =
            parse_users(raw_users.as_deref().unwrap_or(DEFAULT_USERS)).ok_or_else(|| {
                // The value holds passwords: only its length is shown.
                ConfigError::secret(
                    "DASHBOARD_USERS",
                    raw_users.as_deref().map_or(0, str::len),
                    "name:password pairs separated by commas, names unique, neither part empty",
                )
            })?;
        let raw_projects = s.get("DASHBOARD_PROJECTS");
        let projects =
            parse_list(raw_projects.as_deref().unwrap_or(DEFAULT_PROJECTS)).ok_or_else(|| {
                ConfigError::new(
                    "DASHBOARD_PROJECTS",
                    raw_projects.clone().unwrap_or_default(),
                    "project names separated by commas, unique, none empty",
                )
            })?;
        let raw_defaults = s.get("DASHBOARD_USER_PROJECTS");
        let users = match &raw_defaults {
            Some(raw) => with_projects(users, &projects, raw, true).ok_or_else(|| {
                ConfigError::new(
                    "DASHBOARD_USER_PROJECTS",
                    raw.clone(),
                    "name=project pairs separated by commas, each name a user of \
                     DASHBOARD_USERS (once), each project one of DASHBOARD_PROJECTS",
                )
            })?,
            None => with_projects(users.clone(), &projects, DEFAULT_USER_PROJECTS, false)
                .unwrap_or(users),
        };
        const BYTES: &str = "a whole number of bytes from 0 to 8388608";
        let catalog_bytes: usize =
            parse_or(s, "DASHBOARD_CATALOG_BYTES", DEFAULT_CATALOG_BYTES, BYTES)?;
        if catalog_bytes > MAX_CATALOG_BYTES {
            return Err(ConfigError::new(
                "DASHBOARD_CATALOG_BYTES",
                catalog_bytes.to_string(),
                BYTES,
            ));
        }
        const SECONDS: &str = "a whole number of seconds above 0";
        let timeout: u64 = parse_or(
            s,
            "DASHBOARD_SESSION_TIMEOUT",
            DEFAULT_SESSION_TIMEOUT.as_secs(),
            SECONDS,
        )?;
        if timeout == 0 {
            return Err(ConfigError::new("DASHBOARD_SESSION_TIMEOUT", "0", SECONDS));
        }
        const COUNT: &str = "a whole number above 0";
        let mut failures = [0u32; 2];
        for (slot, (name, default)) in failures.iter_mut().zip([
            (
                "DASHBOARD_LOGIN_FAILURES_PER_USER",
                DEFAULT_LOGIN_FAILURES_PER_USER,
            ),
            (
                "DASHBOARD_LOGIN_FAILURES_PER_ADDRESS",
                DEFAULT_LOGIN_FAILURES_PER_ADDRESS,
            ),
        ]) {
            *slot = parse_or(s, name, default, COUNT)?;
            if *slot == 0 {
                return Err(ConfigError::new(name, "0", COUNT));
            }
        }
        let window: u64 = parse_or(
            s,
            "DASHBOARD_LOGIN_WINDOW",
            DEFAULT_LOGIN_WINDOW.as_secs(),
            SECONDS,
        )?;
        if window == 0 {
            return Err(ConfigError::new("DASHBOARD_LOGIN_WINDOW", "0", SECONDS));
        }
        let request_timeout: u64 = parse_or(
            s,
            "DASHBOARD_REQUEST_TIMEOUT",
            DEFAULT_REQUEST_TIMEOUT.as_secs(),
            SECONDS,
        )?;
        if request_timeout == 0 {
            return Err(ConfigError::new("DASHBOARD_REQUEST_TIMEOUT", "0", SECONDS));
        }
        Ok(Self {
            addr,
            users,
            projects,
            catalog_bytes,
            session_timeout: Duration::from_secs(timeout),
            login_failures_per_user: failures[0],
            login_failures_per_address: failures[1],
            login_window: Duration::from_secs(window),
            request_timeout: Duration::from_secs(request_timeout),
            csrf_key: s
                .get("SESSION_SECRET_KEY")
                .map_or_else(CsrfKey::random, |secret| CsrfKey::from_secret(&secret)),
        })
    }

    /// Whether the dashboard may serve on `local`, the address it is bound
    /// to: not beyond loopback while a built-in demo account (`admin:admin`,
    /// `demo:demo`) can log in, as anyone who can reach it knows those
    /// passwords.
    ///
    /// # Errors
    /// [`ExposedDemoUsers`], whose message names `DASHBOARD_USERS`.
    pub fn check_listen_address(&self, local: SocketAddr) -> Result<(), ExposedDemoUsers> {
        if is_loopback(local) {
            return Ok(());
        }
        let demo = parse_users(DEFAULT_USERS).unwrap_or_default();
        let exposed: Vec<String> = self
            .users
            .iter()
            .filter(|u| {
                demo.iter()
                    .any(|d| d.name == u.name && d.password == u.password)
            })
            .map(|u| u.name.clone())
            .collect();
        if exposed.is_empty() {
            Ok(())
        } else {
            Err(ExposedDemoUsers {
                addr: local,
                names: exposed,
            })
        }
    }

    /// The user with this name and password, if any. The password is
    /// compared in constant time, and a password is compared even for an
    /// unknown name, so the answer time tells little about which was wrong.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<&DemoUser> {
        let user = self.users.iter().find(|u| u.name == name);
        let expected = user.map_or("", |u| u.password.as_str());
        let matches: bool = expected.as_bytes().ct_eq(password.as_bytes()).into();
        user.filter(|_| matches)
    }
}

/// True for an address only this machine can reach (an IPv4-mapped IPv6
/// loopback address included).
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// The dashboard would listen beyond loopback with a built-in demo account
/// whose password is public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedDemoUsers {
    addr: SocketAddr,
    names: Vec<String>,
}

impl fmt::Display for ExposedDemoUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to listen on {} (not a loopback address) with the built-in demo \
             account(s) {} and their published passwords: set DASHBOARD_USERS to your own \
             name:password pairs, or listen on 127.0.0.1 (DASHBOARD_ADDR)",
            self.addr,
            self.names.join(", ")
        )
    }
}

impl std::error::Error for ExposedDemoUsers {}

/// A demo account from `DASHBOARD_USERS`, with its default project from
/// `DASHBOARD_USER_PROJECTS`. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DemoUser {
    name: String,
    password: String,
    project: Option<String>,
}

impl DemoUser {
    /// An account `name` with `password`, starting in the first project.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            password: password.into(),
            project: None,
        }
    }

    /// The same account, starting in `project` after each login.
    ///
    /// ```
    /// use dashboard::DemoUser;
    ///
    /// let ada = DemoUser::new("ada", "lovelace").with_project("alt_demo");
    /// assert_eq!(ada.project(), Some("alt_demo"));
    /// ```
    pub fn with_project(self, project: impl Into<String>) -> Self {
        Self {
            project: Some(project.into()),
            ..self
        }
    }

    /// The login name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The project current after login; `None`: the first of
    /// `DASHBOARD_PROJECTS`.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }
}

impl fmt::Debug for DemoUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoUser")
            .field("name", &self.name)
            .field("password", &"REDACTED")
            .field("project", &self.project)
            .finish()
    }
}

/// `users` with the default projects of `raw` (`name=project,...`). With
/// `strict`, `None` when an entry is malformed, names no user, names one
/// twice or names a project not in `projects`; without, such entries are
/// skipped (for the default value, which names devstack's users).
fn with_projects(
    mut users: Vec<DemoUser>,
    projects: &[String],
    raw: &str,
    strict: bool,
) -> Option<Vec<DemoUser>> {
    // Blank (only spaces): no one has a default project.
    if raw.trim().is_empty() {
        return Some(users);
    }
    let mut seen: Vec<&str> = Vec::new();
    for entry in raw.split(',').map(str::trim) {
        let found = entry.split_once('=').and_then(|(name, project)| {
            let (name, project) = (name.trim(), project.trim());
            let known = projects.iter().any(|p| p == project) && !seen.contains(&name);
            let user = users
                .iter_mut()
                .find(|u| u.name == name)
                .filter(|_| known)?;
            user.project = Some(project.to_owned());
            Some(name)
        });
        match found {
            Some(name) => seen.push(name),
            None if strict => return None,
            None => {}
        }
    }
    Some(users)
}

/// `name:password,name:password`; `None` on an empty part or a repeated name.
fn parse_users(raw: &str) -> Option<Vec<DemoUser>> {
    let mut users: Vec<DemoUser> = Vec::new();
    for entry in raw.split(',') {
        let (name, password) = entry.trim().split_once(':')?;
        if name.is_empty() || password.is_empty() || users.iter().any(|u| u.name == name) {
            return None;
        }
        users.push(DemoUser::new(name, password));
    }
    Some(users)
}

/// A comma list of unique, non-empty names.
fn parse_list(raw: &str) -> Option<Vec<String>> {
    let mut items: Vec<String> = Vec::new();
    for item in raw.split(',').map(str::trim) {
        if item.is_empty() || items.iter().any(|i| i == item) {
            return None;
        }
        items.push(item.to_owned());
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom::core::config::from_pairs;

    fn err(pairs: &[(&str, &str)]) -> String {
        match DashboardSettings::from_settings(&from_pairs(pairs.iter().copied())) {
            Ok(s) => panic!("accepted {pairs:?}: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_documented_ones() {
        let s = DashboardSettings::from_settings(&from_pairs([])).expect("defaults");
        assert_eq!(s.addr, "127.0.0.1:8000");
        let names: Vec<&str> = s.users.iter().map(DemoUser::name).collect();
        assert_eq!(names, ["admin", "demo"]);
        assert_eq!(s.projects, ["admin", "demo", "alt_demo"]);
        assert_eq!(s.catalog_bytes, 10_240);
        assert_eq!(s.session_timeout, Duration::from_secs(3600));
        assert_eq!(s.login_failures_per_user, 5);
        assert_eq!(s.login_failures_per_address, 20);
        assert_eq!(s.login_window, Duration::from_secs(300));
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(
            format!("{:?}", s.users),
            format!("{:?}", DashboardSettings::default().users)
        );
    }

    #[test]
    fn passwords_are_checked_and_never_shown() {
        let s = DashboardSettings::from_settings(&from_pairs([(
            "DASHBOARD_USERS",
            "ada:pw:with:colons, bob:hunter2",
        )]))
        .expect("users");
        assert_eq!(
            s.authenticate("ada", "pw:with:colons").map(DemoUser::name),
            Some("ada")
        );
        assert_eq!(
            s.authenticate("bob", "hunter2").map(DemoUser::name),
            Some("bob")
        );
        assert!(s.authenticate("bob", "hunter").is_none());
        assert!(s.authenticate("bob", "").is_none());
        assert!(s.authenticate("eve", "").is_none());
        assert!(s.authenticate("eve", "hunter2").is_none());
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = err(&[("DASHBOARD_USERS", "bob:hunter2,bob:x")]);
        assert!(
            e.contains("DASHBOARD_USERS") && !e.contains("hunter2"),
            "{e}"
        );
        let e = err(&[("DASHBOARD_USERS", "bob")]);
        assert!(e.contains("name:password"), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert!(err(&[("DASHBOARD_PROJECTS", "a,,b")]).contains("DASHBOARD_PROJECTS"));
        assert!(err(&[("DASHBOARD_PROJECTS", "a,a")]).contains("unique"));
        assert!(err(&[("DASHBOARD_CATALOG_BYTES", "lots")]).contains("DASHBOARD_CATALOG_BYTES"));
        assert!(err(&[("DASHBOARD_CATALOG_BYTES", "9999999999")]).contains("8388608"));
        assert!(err(&[("DASHBOARD_SESSION_TIMEOUT", "0")]).contains("above 0"));
        assert!(err(&[("DASHBOARD_SESSION_TIMEOUT", "-5")]).contains("DASHBOARD_SESSION_TIMEOUT"));
        assert!(
            err(&[("DASHBOARD_LOGIN_FAILURES_PER_USER", "0")])
                .contains("DASHBOARD_LOGIN_FAILURES_PER_USER")
        );
        assert!(
            err(&[("DASHBOARD_LOGIN_FAILURES_PER_ADDRESS", "many")])
                .contains("DASHBOARD_LOGIN_FAILURES_PER_ADDRESS")
        );
        assert!(err(&[("DASHBOARD_LOGIN_WINDOW", "0")]).contains("DASHBOARD_LOGIN_WINDOW"));
        assert!(err(&[("DASHBOARD_REQUEST_TIMEOUT", "0")]).contains("DASHBOARD_REQUEST_TIMEOUT"));
        assert!(err(&[("DASHBOARD_REQUEST_TIMEOUT", "1.5")]).contains("DASHBOARD_REQUEST_TIMEOUT"));
    }

    #[test]
    fn users_have_default_projects() {
        let project = |s: &DashboardSettings, name: &str| {
            s.users
                .iter()
                .find(|u| u.name() == name)
                .and_then(|u| u.project().map(str::to_owned))
        };
        // The demo accounts start in their own projects.
        let s = DashboardSettings::from_settings(&from_pairs([])).expect("defaults");
        assert_eq!(project(&s, "admin").as_deref(), Some("admin"));
        assert_eq!(project(&s, "demo").as_deref(), Some("demo"));
        assert_eq!(
            project(&DashboardSettings::default(), "demo").as_deref(),
            Some("demo")
        );
        // The default skips users and projects that are not configured.
        let s = DashboardSettings::from_settings(&from_pairs([
            ("DASHBOARD_USERS", "demo:pw,ops:pw"),
            ("DASHBOARD_PROJECTS", "infra,web"),
        ]))
        .expect("users");
        assert_eq!(project(&s, "demo"), None);
        assert_eq!(project(&s, "ops"), None);
        let s = DashboardSettings::from_settings(&from_pairs([
            ("DASHBOARD_USERS", "ada:pw:with:colons,bob:x"),
            ("DASHBOARD_PROJECTS", "infra,web"),
            ("DASHBOARD_USER_PROJECTS", " ada = web "),
        ]))
        .expect("users");
        assert_eq!(project(&s, "ada").as_deref(), Some("web"));
        assert_eq!(project(&s, "bob"), None);
        assert!(
            s.authenticate("ada", "pw:with:colons").is_some(),
            "the password keeps its colons"
        );
        // A value that is set is checked.
        for bad in [
            "admin=nope",
            "nobody=admin",
            "admin",
            "admin=demo,admin=admin",
            "admin=demo,,",
        ] {
            let e = err(&[("DASHBOARD_USER_PROJECTS", bad)]);
            assert!(e.contains("DASHBOARD_USER_PROJECTS"), "{bad}: {e}");
        }
    }

    #[test]
    fn login_limits_are_read() {
        let s = DashboardSettings::from_settings(&from_pairs([
            ("DASHBOARD_LOGIN_FAILURES_PER_USER", "3"),
            ("DASHBOARD_LOGIN_FAILURES_PER_ADDRESS", "7"),
            ("DASHBOARD_LOGIN_WINDOW", "2"),
        ]))
        .expect("limits");
        assert_eq!(s.login_failures_per_user, 3);
        assert_eq!(s.login_failures_per_address, 7);
        assert_eq!(s.login_window, Duration::from_secs(2));
    }

    #[test]
    fn demo_accounts_are_refused_beyond_loopback() {
        let addr = |a: &str| a.parse::<SocketAddr>().expect("an address");
        let demo = DashboardSettings::default();
        for local in [
            "127.0.0.1:8000",
            "[::1]:8000",
            "[::ffff:127.0.0.1]:80",
            "127.0.0.2:1",
        ] {
            assert_eq!(demo.check_listen_address(addr(local)), Ok(()), "{local}");
        }
        for local in ["0.0.0.0:8000", "[::]:8000", "192.0.2.7:80"] {
            let e = demo
                .check_listen_address(addr(local))
                .expect_err(local)
                .to_string();
            assert!(
                e.contains("DASHBOARD_USERS") && e.contains("admin, demo"),
                "{e}"
            );
            assert!(e.contains(local), "{e}");
        }
        // One demo account among others is enough to refuse.
        let mixed = DashboardSettings::from_settings(&from_pairs([(
            "DASHBOARD_USERS",
            "ops:Long-random-1,demo:demo",
        )]))
        .expect("users");
        let e = mixed
            .check_listen_address(addr("0.0.0.0:8000"))
            .expect_err("demo:demo")
            .to_string();
        assert!(e.contains("demo") && !e.contains("ops"), "{e}");
        // A demo name with its own password is fine.
        let own = DashboardSettings::from_settings(&from_pairs([(
            "DASHBOARD_USERS",
            "admin:Long-random-2",
        )]))
        .expect("users");
        assert_eq!(own.check_listen_address(addr("0.0.0.0:8000")), Ok(()));
    }
}
