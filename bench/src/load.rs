//! Driving one variant: start its server pinned to a core, log in the
//! simulated users, check the routes answer what they should, then load
//! each route with wrk pinned to the other core.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The routes measured, in order. `/read-sliding` comes last: it gives the
/// sessions an idle timeout, which the other routes then would carry too.
pub const ROUTES: [&str; 4] = ["/nosession", "/read", "/write", "/read-sliding"];

/// How the load is shaped.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Open connections of the load generator.
    pub connections: usize,
    /// Sessions logged in before timing; each request picks one at random.
    pub sessions: usize,
    /// Unmeasured load before each measured run.
    pub warmup: Duration,
    /// Measured time per route.
    pub duration: Duration,
    /// The core the server runs on.
    pub server_core: usize,
    /// The core wrk runs on.
    pub load_core: usize,
    /// Where cookie lists and the wrk script go.
    pub work_dir: PathBuf,
}

/// What wrk measured on one route.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// Completed requests per second.
    pub rate: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Responses that were not 2xx or 3xx, plus socket errors.
    pub errors: u64,
}

/// A running variant server, stopped on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `exe serve VARIANT` on `core` and waits for its address.
    ///
    /// # Errors
    /// When it cannot start or exits before printing its address.
    pub fn start(exe: &Path, variant: &str, core: usize) -> Result<Self, String> {
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg(core.to_string())
            .arg(exe)
            .args(["serve", variant]);
        Self::spawn(command, variant, "taskset")
    }

    /// Runs `command`, a `serve VARIANT` under `wrapper`, and waits for the
    /// address it prints.
    ///
    /// # Errors
    /// When it cannot start or exits before printing its address.
    pub fn spawn(mut command: Command, variant: &str, wrapper: &str) -> Result<Self, String> {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the {variant} server (is {wrapper} installed?): {e}"))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let addr = line.trim().to_owned();
        if addr.is_empty() {
            let _ = child.kill();
            let status = child.wait().ok();
            return Err(format!("the {variant} server did not start ({status:?})"));
        }
        Ok(Self { child, addr })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// One HTTP/1.1 GET over a fresh connection: status, `Set-Cookie` name=value
/// pairs, body.
fn get(addr: &str, path: &str, cookie: &str) -> Result<(u16, Vec<String>, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send {path}: {e}"))?;
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .map_err(|e| format!("read {path}: {e}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{path}: no status line"))?;
    let cookies = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, value)| value.trim().split(';').next())
        .map(str::to_owned)
        .collect();
    Ok((status, cookies, body.to_owned()))
}

/// Logs in `plan.sessions` users (eight at a time) and returns the `Cookie`
/// header of each.
///
/// # Errors
/// When a login fails or sets no cookie.
pub fn log_in(addr: &str, sessions: usize) -> Result<Vec<String>, String> {
    const PARALLEL: usize = 8;
    let per = sessions.div_ceil(PARALLEL);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PARALLEL)
            .map(|i| {
                let count = per.min(sessions.saturating_sub(i * per));
                scope.spawn(move || {
                    (0..count)
                        .map(|_| {
                            let (status, cookies, _) = get(addr, "/login", "")?;
                            if status != 200 || cookies.is_empty() {
                                return Err(format!("/login answered {status} with {cookies:?}"));
                            }
                            Ok(cookies.join("; "))
                        })
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(sessions);
        for handle in handles {
            all.extend(
                handle
                    .join()
                    .map_err(|_| "a login thread panicked".to_owned())??,
            );
        }
        Ok(all)
    })
}

/// Checks the routes answer as the benchmark expects for a fresh session:
/// `/nosession` says ok, `/read` 0, `/write` 1, and then `/read-sliding`
/// what `/read` says (the plain variant has no counter: 0).
///
/// # Errors
/// Describes the first wrong answer.
pub fn check(addr: &str, cookie: &str) -> Result<(), String> {
    let answer = |path: &str| -> Result<String, String> {
        match get(addr, path, cookie)? {
            (200, _, body) => Ok(body),
            (status, _, body) => Err(format!("{path} answered {status} {body:?}")),
        }
    };
    for (path, want) in [("/nosession", "ok"), ("/read", "0"), ("/write", "1")] {
        let body = answer(path)?;
        if body != want {
            return Err(format!("{path} answered {body:?}, expected {want:?}"));
        }
    }
    let (sliding, read) = (answer("/read-sliding")?, answer("/read")?);
    if sliding != read {
        return Err(format!(
            "/read-sliding answered {sliding:?}, /read {read:?}: they should agree"
        ));
    }
    Ok(())
}

/// The wrk script: every request is the route with one of the cookies,
/// picked at random; requests are prepared once per thread.
const SCRIPT: &str = r#"
local prepared = {}
function init(args)
  local path, file = args[1], args[2]
  for line in io.lines(file) do
    prepared[#prepared + 1] = wrk.format("GET", path, { ["Cookie"] = line })
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
function request()
  return prepared[math.random(#prepared)]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(99), e.status + e.connect + e.read + e.write + e.timeout))
end
"#;

/// Writes the cookie list and the wrk script into the work directory.
///
/// # Errors
/// When a file cannot be written.
pub fn prepare(
    plan: &Plan,
    variant: &str,
    cookies: &[String],
) -> Result<(PathBuf, PathBuf), String> {
    let script = plan.work_dir.join("bench.lua");
    std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    let list = plan.work_dir.join(format!("{variant}.cookies"));
    std::fs::write(&list, cookies.join("\n") + "\n")
        .map_err(|e| format!("{}: {e}", list.display()))?;
    Ok((script, list))
}

fn wrk(
    plan: &Plan,
    addr: &str,
    route: &str,
    files: &(PathBuf, PathBuf),
    duration: Duration,
) -> Result<Measurement, String> {
    let output = Command::new("taskset")
        .arg("-c")
        .arg(plan.load_core.to_string())
        .arg("wrk")
        .args(["-t1", &format!("-c{}", plan.connections)])
        // wrk takes whole seconds.
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "10s", "-s"])
        .arg(&files.0)
        .arg(format!("http://{addr}"))
        .arg("--")
        .arg(route)
        .arg(&files.1)
        .output()
        .map_err(|e| format!("run wrk (is it installed?): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| {
            format!(
                "wrk printed no result: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [requests, micros, p99_us, errors] = numbers[..] else {
        return Err(format!("wrk result not understood: {line}"));
    };
    Ok(Measurement {
        rate: requests / (micros / 1e6),
        p99_us,
        errors: errors as u64,
    })
}

/// Loads `route` for the warm-up, then for the measured time.
///
/// # Errors
/// When wrk cannot run or prints no result.
pub fn measure(
    plan: &Plan,
    addr: &str,
    route: &str,
    files: &(PathBuf, PathBuf),
) -> Result<Measurement, String> {
    if !plan.warmup.is_zero() {
        wrk(plan, addr, route, files, plan.warmup)?;
    }
    wrk(plan, addr, route, files, plan.duration)
}
