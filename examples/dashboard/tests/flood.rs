//! The built binary on the memory engine, with room for only a hundred
//! sessions, flooded with anonymous visits to the login page: a user who
//! logged in before stays logged in, because the login page stores nothing
//! on the server (its CSRF token is in a signed cookie).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Visits to the login page: many times the sessions the store can hold.
const FLOOD: usize = 3_000;

/// The dashboard binary, stopped when the test ends however it ends.
struct Dashboard {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dashboard {
    fn start() -> Self {
        // A free loopback port: taken, noted, given back for the dashboard.
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let child = Command::new(env!("CARGO_BIN_EXE_dashboard"))
            .env("DASHBOARD_ADDR", addr.to_string())
            .env("DASHBOARD_USERS", "ada:lovelace-2026")
            .env("SESSION_ENGINE", "cache")
            .env("SESSION_CACHE_URL", "memory://")
            .env("SESSION_CACHE_MAX_ENTRIES", "100")
            .env("SESSION_CACHE_MAX_ANONYMOUS_ENTRIES", "100")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the dashboard binary runs");
        let dashboard = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the dashboard never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        dashboard
    }

    /// One request on its own connection; the status line, the headers
    /// (lower-case names) and the body.
    fn send(&self, method: &str, path: &str, cookie: &str, form: &str) -> Answer {
        let mut stream = TcpStream::connect(self.addr).expect("a connection");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if !cookie.is_empty() {
            request.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        if method == "POST" {
            request.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                form.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(form);
        stream.write_all(request.as_bytes()).expect("the request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("the answer");
        Answer::parse(&String::from_utf8_lossy(&raw))
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn parse(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").expect("a whole answer");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// `name=value` of the cookie `name` this answer sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .filter_map(|(_, v)| v.split(';').next())
            .find(|pair| pair.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    fn csrf_token(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.body.find(marker).expect("a CSRF field") + marker.len();
        let end = self.body[start..].find('"').expect("a quote");
        self.body[start..start + end].to_owned()
    }
}

#[test]
fn a_flood_of_login_page_visits_logs_nobody_out() {
    let dashboard = Dashboard::start();

    // Ada logs in.
    let form = dashboard.send("GET", "/auth/login", "", "");
    assert_eq!(form.status, 200, "{form:?}");
    let csrf_cookie = form.cookie("dashboard_login_csrf").expect("a CSRF cookie");
    let fields = format!(
        "username=ada&password=lovelace-2026&csrf_token={}",
        form.csrf_token()
    );
    let login = dashboard.send("POST", "/auth/login", &csrf_cookie, &fields);
    assert_eq!(login.status, 303, "{login:?}");
    let session = login.cookie("sessionid").expect("a session cookie");
    let overview = dashboard.send("GET", "/", &session, "");
    assert_eq!(overview.status, 200, "{overview:?}");

    // Strangers open the login page thirty times as often as the store has
    // room for sessions; none of them gets one.
    for i in 0..FLOOD {
        let page = dashboard.send("GET", "/auth/login", "", "");
        assert_eq!(page.status, 200, "visit {i}: {page:?}");
        assert_eq!(page.cookie("sessionid"), None, "visit {i}: {page:?}");
    }

    // Ada is still logged in.
    let overview = dashboard.send("GET", "/", &session, "");
    assert_eq!(
        overview.status, 200,
        "logged out by the flood: {overview:?}"
    );
    assert!(overview.body.contains("ada"), "{}", overview.body);
}
