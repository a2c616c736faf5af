//! Instructions per request, counted by valgrind's callgrind: a second view
//! of the same variants that the noise of a shared host cannot move.
//!
//! Each variant's server runs under callgrind with counting off. The users
//! log in and each route is warmed up; then counting is switched on for a
//! fixed number of requests on one keep-alive connection, each carrying the
//! cookie of one of the sessions (a fixed pseudo-random order, the same for
//! every variant), and the count is dumped.
//!
//! What it does not see: the kernel's share of a request (most of it on
//! loopback HTTP, so the throughput ratios are kinder than these), and
//! waiting on other servers. valgrind also hides some CPU features, so
//! `ring`'s SHA-256 runs its plain vector code here instead of the SHA
//! instructions it uses on hardware that has them, which costs cloakroom
//! about 1,800 instructions per request it would not spend there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::load::{self, ROUTES, Server};

/// How a count is taken.
#[derive(Debug, Clone)]
pub struct CountPlan {
    /// Sessions logged in before counting.
    pub sessions: usize,
    /// Requests counted per route.
    pub requests: usize,
    /// Where callgrind writes its files.
    pub work_dir: PathBuf,
    /// Where to copy each route's profile for `callgrind_annotate`, if
    /// anywhere (they are removed otherwise).
    pub keep: Option<PathBuf>,
    /// Also simulate the CPU's caches (`--cache-sim=yes`) and count the
    /// first-level misses.
    pub cache: bool,
}

/// What a route costs per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// Instructions executed.
    pub instructions: f64,
    /// First-level cache misses for instructions and for data (reads and
    /// writes), as callgrind's model of this machine's caches counts them;
    /// `None` unless [`CountPlan::cache`].
    pub l1_misses: Option<(f64, f64)>,
}

/// A variant's server under callgrind, stopped on drop.
struct Counted {
    server: Option<Server>,
    out: PathBuf,
    dumps: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        // Stop the server first, then remove what callgrind wrote.
        self.server.take();
        let _ = std::fs::remove_file(&self.out);
        for n in 1..=self.dumps {
            let _ = std::fs::remove_file(self.dump(n));
        }
    }
}

impl Counted {
    fn start(exe: &Path, variant: &str, plan: &CountPlan) -> Result<Self, String> {
        let out = plan.work_dir.join(format!("callgrind.{variant}"));
        let mut command = Command::new("valgrind");
        command
            .args(["--tool=callgrind", "--instr-atstart=no"])
            .args(plan.cache.then_some("--cache-sim=yes"))
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(exe)
            .args(["serve", variant])
            .stderr(Stdio::null());
        Ok(Self {
            server: Some(Server::spawn(command, variant, "valgrind")?),
            out,
            dumps: 0,
        })
    }

    fn addr(&self) -> &str {
        self.server.as_ref().map_or("", Server::addr)
    }

    /// The file of the `n`th dump.
    fn dump(&self, n: usize) -> PathBuf {
        PathBuf::from(format!("{}.{n}", self.out.display()))
    }

    fn control(&self, args: &[&str]) -> Result<(), String> {
        let status = Command::new("callgrind_control")
            .args(args)
            .arg(self.server.as_ref().map_or(0, Server::id).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("callgrind_control: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("callgrind_control {args:?} failed: {status}"))
        }
    }

    /// Counts the events of running `work`, from zeroed counters.
    fn count(&mut self, work: impl FnOnce() -> Result<(), String>) -> Result<Totals, String> {
        self.control(&["--instr=on"])?;
        work()?;
        self.control(&["--instr=off"])?;
        self.control(&["--dump"])?;
        self.dumps += 1;
        // callgrind_control returns once the dump is written; wait a little
        // in case the file is not complete yet.
        let file = self.dump(self.dumps);
        for _ in 0..50 {
            if let Some(total) = total_of(&file) {
                return Ok(total);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("no callgrind total in {}", file.display()))
    }
}

/// The totals of a callgrind output file, by event name (`Ir`, and with
/// the cache simulation `I1mr`, `D1mr`, `D1mw`, ...).
type Totals = HashMap<String, u64>;

/// The totals of a callgrind output file: its `events:` line names them,
/// its `totals:` line counts them (the `summary:` line of a dump made on
/// request can be 0, so the larger of the two is taken).
fn total_of(file: &Path) -> Option<Totals> {
    let text = std::fs::read_to_string(file).ok()?;
    let names: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("events:"))?
        .split_whitespace()
        .collect();
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .filter_map(|line| {
            let counts: Option<Vec<u64>> =
                line.split_whitespace().map(|n| n.parse().ok()).collect();
            let totals: Totals = names.iter().map(|n| (*n).to_owned()).zip(counts?).collect();
            Some(totals)
        })
        .max_by_key(|totals| totals.get("Ir").copied().unwrap_or(0))
        .filter(|totals| totals.get("Ir").is_some_and(|ir| *ir > 0))
}

/// A keep-alive HTTP/1.1 connection that sends GETs and checks for 200.
struct Client {
    stream: BufReader<TcpStream>,
    addr: String,
}

impl Client {
    fn connect(addr: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            stream: BufReader::new(stream),
            addr: addr.to_owned(),
        })
    }

    fn get(&mut self, path: &str, cookie: &str) -> Result<(), String> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
            self.addr
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("send {path}: {e}"))?;
        let mut status = String::new();
        self.stream
            .read_line(&mut status)
            .map_err(|e| format!("read {path}: {e}"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream
                .read_line(&mut line)
                .map_err(|e| format!("read {path}: {e}"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("read {path}: {e}"))?;
        if status.split_whitespace().nth(1) == Some("200") {
            Ok(())
        } else {
            Err(format!("{path} answered {}", status.trim()))
        }
    }
}

/// The cost per request of each route of `variant`, in [`ROUTES`] order.
///
/// # Errors
/// When the server, valgrind or a request fails.
pub fn count(exe: &Path, plan: &CountPlan, variant: &str) -> Result<Vec<Cost>, String> {
    let mut server = Counted::start(exe, variant, plan)?;
    let cookies = load::log_in(server.addr(), plan.sessions)?;
    if let Some(first) = cookies.first() {
        load::check(server.addr(), first)?;
    }
    let mut client = Client::connect(server.addr())?;
    let mut counts = Vec::with_capacity(ROUTES.len());
    for route in ROUTES {
        // A fixed order of sessions, the same for every variant.
        let mut pick = Lcg(7);
        for _ in 0..plan.requests / 10 + 1 {
            client.get(route, &cookies[pick.below(cookies.len())])?;
        }
        let mut pick = Lcg(11);
        let totals = server.count(|| {
            (0..plan.requests)
                .try_for_each(|_| client.get(route, &cookies[pick.below(cookies.len())]))
        })?;
        let per_request = |names: &[&str]| {
            names.iter().filter_map(|n| totals.get(*n)).sum::<u64>() as f64 / plan.requests as f64
        };
        counts.push(Cost {
            instructions: per_request(&["Ir"]),
            l1_misses: plan
                .cache
                .then(|| (per_request(&["I1mr"]), per_request(&["D1mr", "D1mw"]))),
        });
        if let Some(dir) = &plan.keep {
            let name = format!("{variant}.{}.callgrind", route.trim_start_matches('/'));
            std::fs::copy(server.dump(server.dumps), dir.join(&name))
                .map_err(|e| format!("keeping {name} in {}: {e}", dir.display()))?;
        }
    }
    Ok(counts)
}

/// A small deterministic generator for the order of sessions.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}
