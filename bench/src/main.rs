//! `cloakroom-bench`: requests per second and p99 latency of every variant
//! over loopback HTTP, with ratios to plain axum and to the rival on the
//! same backend, all from one run. Start it with `bash bench/run`, which
//! starts the servers and builds this in release mode.
//!
//! ```text
//! cloakroom-bench [--seconds N] [--warmup N] [--rounds N] [--connections N]
//!                 [--sessions N] [--memory-sessions N] [--only NAME,NAME..]
//! cloakroom-bench serve VARIANT    # one variant's server (used by the run)
//! cloakroom-bench memory ENGINE    # memory per session (used by the run)
//! cloakroom-bench instructions [--requests N] [--sessions N] [--only NAME,NAME..]
//!                              [--keep DIR] [--cache]
//!                                  # instructions per request under callgrind
//!                                  # (--cache: and first-level cache misses)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use cloakroom_bench::count::{self, Cost, CountPlan};
use cloakroom_bench::load::{self, Measurement, Plan, ROUTES, Server};
use cloakroom_bench::memory::{self, Footprint};
use cloakroom_bench::variants::{self, PLAIN, Variant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(args.get(1).map_or("", String::as_str)),
        Some("memory") => footprint(args.get(1).map_or("", String::as_str), &args[2..]),
        Some("instructions") => instructions(&args[1..]),
        _ => Options::parse(&args).and_then(|options| run(&options)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cloakroom-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The server of one variant: one tokio worker, an ephemeral loopback port
/// printed on the first line of stdout.
fn serve(variant: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let app = variants::app(variant).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("{addr}");
        axum::serve(listener, app)
            .await
            .map_err(|e| format!("serve: {e}"))
    })
}

/// Measures one in-process store and prints its footprint line.
fn footprint(engine: &str, rest: &[String]) -> Result<(), String> {
    let sessions = rest.first().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let found = runtime.block_on(memory::measure(engine, sessions))?;
    println!("{}", found.to_line());
    Ok(())
}

/// The variants counted when `instructions` is given no `--only`: those
/// that need no other server.
const IN_PROCESS: &[&str] = &[
    "memory",
    "ts-memory",
    "memory-by-hand",
    "moka-by-hand",
    "signed_cookies",
    "encrypted_cookies",
    "jar-signed",
];

/// `cloakroom-bench instructions`: instructions per request of each variant
/// and route under callgrind, with the same ratios as the throughput table.
fn instructions(args: &[String]) -> Result<(), String> {
    let mut plan = CountPlan {
        sessions: 100,
        requests: 2000,
        work_dir: std::env::var_os("CLOAKROOM_TEST_DIR")
            .map_or_else(std::env::temp_dir, Into::into),
        keep: None,
        cache: false,
    };
    let mut only: Vec<String> = IN_PROCESS.iter().map(|n| (*n).to_owned()).collect();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--cache" {
            plan.cache = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} takes a whole number above 0, not {value}"))
        };
        match flag.as_str() {
            "--requests" => plan.requests = number()?,
            "--sessions" => plan.sessions = number()?,
            "--only" => only = value.split(',').map(str::to_owned).collect(),
            "--keep" => {
                std::fs::create_dir_all(value).map_err(|e| format!("--keep {value}: {e}"))?;
                plan.keep = Some(value.into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let mut selected = vec![variants::find(PLAIN).ok_or("no plain variant")?];
    for name in &only {
        let variant = variants::find(name).ok_or_else(|| format!("no variant {name}"))?;
        if variant.name != PLAIN {
            selected.push(variant);
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut costs: HashMap<&str, Vec<Cost>> = HashMap::new();
    for variant in &selected {
        eprintln!("instructions: {}", variant.label);
        costs.insert(variant.name, count::count(&exe, &plan, variant.name)?);
    }
    let counts: HashMap<&str, Vec<f64>> = costs
        .iter()
        .map(|(name, c)| (*name, c.iter().map(|c| c.instructions).collect()))
        .collect();
    println!();
    println!(
        "cloakroom-bench instructions {} UTC: user-space instructions per request under \
         callgrind, {} requests per route on one keep-alive connection, {} sessions \
         holding a {}-byte token",
        time::OffsetDateTime::now_utc().date(),
        plan.requests,
        plan.sessions,
        cloakroom_bench::apps::TOKEN_BYTES,
    );
    println!(
        "x axum: plain axum's count divided by the variant's; \
         x rival: the bracketed variant's count divided by this one's"
    );
    println!(
        "not counted: the kernel's share of each request; counted high: SHA-256 (session \
         keys, signed cookies), as valgrind hides the CPU's SHA instructions"
    );
    println!();
    print!("{:<44}", "variant");
    for route in ROUTES {
        print!(" | {route:<24}");
    }
    println!();
    print!("{:<44}", "");
    for _ in ROUTES {
        print!(" | {:>8} {:>6} {:>8}", "instr", "x axum", "x rival");
    }
    println!();
    let plain = counts.get(PLAIN).cloned().unwrap_or_default();
    for variant in &selected {
        let label = match variant.rival.filter(|r| counts.contains_key(r)) {
            Some(rival) => format!("{} [{rival}]", variant.label),
            None => variant.label.to_owned(),
        };
        print!("{label:<44}");
        let ours = &counts[variant.name];
        for (i, n) in ours.iter().enumerate() {
            let vs_plain = plain.get(i).map(|p| p / n);
            let vs_rival = variant
                .rival
                .and_then(|r| counts.get(r))
                .and_then(|r| r.get(i))
                .map(|r| r / n);
            let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            print!(" | {n:>8.0} {:>6} {:>8}", fmt(vs_plain), fmt(vs_rival));
        }
        println!();
    }
    if plan.cache {
        print_cache_misses(&selected, &costs);
    }
    Ok(())
}

/// The table of first-level cache misses per request (`instructions --cache`).
fn print_cache_misses(selected: &[Variant], costs: &HashMap<&str, Vec<Cost>>) {
    println!();
    println!(
        "first-level cache misses per request, as callgrind's model of this machine's \
         caches counts them: instruction fetches (I1) and data reads and writes (D1)"
    );
    println!();
    print!("{:<44}", "variant");
    for route in ROUTES {
        print!(" | {route:<15}");
    }
    println!();
    print!("{:<44}", "");
    for _ in ROUTES {
        print!(" | {:>7} {:>7}", "I1", "D1");
    }
    println!();
    for variant in selected {
        print!("{:<44}", variant.label);
        for cost in &costs[variant.name] {
            let (i1, d1) = cost.l1_misses.unwrap_or_default();
            print!(" | {i1:>7.0} {d1:>7.0}");
        }
        println!();
    }
}

#[derive(Debug)]
struct Options {
    plan: Plan,
    rounds: usize,
    memory_sessions: usize,
    only: Option<Vec<String>>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let work_dir =
            std::env::var_os("CLOAKROOM_TEST_DIR").map_or_else(std::env::temp_dir, Into::into);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut options = Self {
            plan: Plan {
                connections: 32,
                sessions: 1000,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(5),
                server_core: 0,
                load_core: if cores > 1 { 1 } else { 0 },
                work_dir,
            },
            rounds: 1,
            memory_sessions: 100_000,
            only: None,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| format!("{flag} needs a value"))
                    .cloned()
            };
            let number = |v: String| {
                v.parse::<u64>()
                    .map_err(|_| format!("{flag} takes a whole number, not {v}"))
            };
            match flag.as_str() {
                "--seconds" => options.plan.duration = Duration::from_secs(number(value()?)?),
                "--warmup" => options.plan.warmup = Duration::from_secs(number(value()?)?),
                "--rounds" => options.rounds = usize::try_from(number(value()?)?).unwrap_or(1),
                "--connections" => {
                    options.plan.connections = usize::try_from(number(value()?)?).unwrap_or(32);
                }
                "--sessions" => {
                    options.plan.sessions = usize::try_from(number(value()?)?).unwrap_or(1000);
                }
                "--memory-sessions" => {
                    options.memory_sessions = usize::try_from(number(value()?)?).unwrap_or(0);
                }
                "--only" => {
                    let names: Vec<String> = value()?.split(',').map(str::to_owned).collect();
                    if let Some(bad) = names.iter().find(|n| variants::find(n).is_none()) {
                        let known: Vec<_> = variants::ALL.iter().map(|v| v.name).collect();
                        return Err(format!("no variant {bad}; known: {}", known.join(", ")));
                    }
                    options.only = Some(names);
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if options.rounds == 0 || options.plan.sessions == 0 || options.plan.connections == 0 {
            return Err("--rounds, --sessions and --connections must be above 0".into());
        }
        Ok(options)
    }

    fn selected(&self) -> Vec<Variant> {
        variants::ALL
            .iter()
            .copied()
            .filter(|v| {
                v.name == PLAIN
                    || self
                        .only
                        .as_ref()
                        .is_none_or(|only| only.iter().any(|n| n == v.name))
            })
            .collect()
    }
}

/// One route of one variant, measured right after plain axum on the same
/// route, so that a ratio never compares moments far apart on a noisy host.
#[derive(Debug, Clone, Copy)]
struct Pair {
    ours: Measurement,
    plain: Measurement,
}

impl Pair {
    fn vs_plain(&self) -> Option<f64> {
        (self.plain.rate > 0.0).then(|| self.ours.rate / self.plain.rate)
    }
}

/// Results of one round: variant name → one pair per route.
type Round = HashMap<&'static str, Vec<Pair>>;

/// A variant's server, logged in and ready to load.
struct Ready {
    server: Server,
    files: (PathBuf, PathBuf),
}

fn ready(exe: &Path, plan: &Plan, variant: &Variant) -> Result<Ready, String> {
    let server = Server::start(exe, variant.name, plan.server_core)?;
    let cookies = load::log_in(server.addr(), plan.sessions)?;
    let first = cookies.first().map_or("", String::as_str);
    load::check(server.addr(), first)?;
    let files = load::prepare(plan, variant.name, &cookies)?;
    Ok(Ready { server, files })
}

fn run(options: &Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let plan = &options.plan;
    let selected = options.selected();

    let footprints = if options.memory_sessions > 0 {
        memory::ENGINES
            .iter()
            .map(|engine| {
                (
                    *engine,
                    measure_footprint(&exe, engine, options.memory_sessions),
                )
            })
            .collect()
    } else {
        Vec::new()
    };

    let plain_variant = variants::find(PLAIN).ok_or("no plain variant")?;
    let mut rounds: Vec<Round> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for round in 1..=options.rounds {
        let plain = ready(&exe, plan, &plain_variant)?;
        let mut results = Round::new();
        for variant in selected.iter().filter(|v| v.name != PLAIN) {
            match run_variant(&exe, plan, &plain, variant, round) {
                Ok(pairs) => {
                    let errors: u64 = pairs.iter().map(|p| p.ours.errors + p.plain.errors).sum();
                    if errors > 0 {
                        failures.push(format!(
                            "{} (round {round}): {errors} failed requests",
                            variant.label
                        ));
                    }
                    results.insert(variant.name, pairs);
                }
                Err(err) => failures.push(format!("{} (round {round}): {err}", variant.label)),
            }
        }
        rounds.push(results);
    }

    print_header(options);
    print_table(&selected, &rounds);
    print_footprints(&footprints);
    if failures.is_empty() {
        Ok(())
    } else {
        for failure in &failures {
            eprintln!("FAILED: {failure}");
        }
        Err(format!("{} variant runs failed", failures.len()))
    }
}

fn measure_footprint(exe: &Path, engine: &str, sessions: usize) -> Result<Footprint, String> {
    eprintln!("memory: {sessions} sessions in {engine}");
    let output = Command::new(exe)
        .args(["memory", engine, &sessions.to_string()])
        .output()
        .map_err(|e| format!("run the memory measurement: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(Footprint::from_line)
        .ok_or_else(|| {
            format!(
                "no footprint from {engine}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

fn run_variant(
    exe: &Path,
    plan: &Plan,
    plain: &Ready,
    variant: &Variant,
    round: usize,
) -> Result<Vec<Pair>, String> {
    let ours = ready(exe, plan, variant)?;
    let mut pairs = Vec::with_capacity(ROUTES.len());
    for route in ROUTES {
        let plain = load::measure(plan, plain.server.addr(), route, &plain.files)?;
        let m = load::measure(plan, ours.server.addr(), route, &ours.files)?;
        eprintln!(
            "round {round}: {:<40} {:<10} {:>8.0} req/s  p99 {:>6.2} ms  (plain axum just before: {:>8.0} req/s){}",
            variant.label,
            route,
            m.rate,
            m.p99_us / 1000.0,
            plain.rate,
            if m.errors + plain.errors > 0 {
                format!("  {} ERRORS", m.errors + plain.errors)
            } else {
                String::new()
            }
        );
        pairs.push(Pair { ours: m, plain });
    }
    Ok(pairs)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    })
}

/// The pair of `name` on route `i` in one round.
fn pair(round: &Round, name: &str, i: usize) -> Option<Pair> {
    round.get(name)?.get(i).copied()
}

/// One table cell group: requests/s, p99 in ms, ratio to plain axum and to
/// the rival, each the median over the rounds.
fn cells(rounds: &[Round], variant: &Variant, i: usize) -> [Option<f64>; 4] {
    let across = |f: &dyn Fn(&Round) -> Vec<f64>| median(rounds.iter().flat_map(f).collect());
    if variant.name == PLAIN {
        // Every plain measurement of the round, and by definition 1.
        let all = |f: fn(&Pair) -> f64| {
            across(&|r: &Round| r.values().filter_map(|p| p.get(i)).map(f).collect())
        };
        return [
            all(|p| p.plain.rate),
            all(|p| p.plain.p99_us / 1000.0),
            Some(1.0),
            None,
        ];
    }
    let ours = |f: fn(&Pair) -> Option<f64>| {
        across(&|r: &Round| {
            pair(r, variant.name, i)
                .and_then(|p| f(&p))
                .into_iter()
                .collect()
        })
    };
    // Against the rival through each one's own plain measurement.
    let vs_rival = variant.rival.and_then(|rival| {
        across(&|r: &Round| {
            let ours = pair(r, variant.name, i).and_then(|p| p.vs_plain());
            let theirs = pair(r, rival, i).and_then(|p| p.vs_plain());
            ours.zip(theirs).map(|(a, b)| a / b).into_iter().collect()
        })
    });
    [
        ours(|p| Some(p.ours.rate)),
        ours(|p| Some(p.ours.p99_us / 1000.0)),
        ours(Pair::vs_plain),
        vs_rival,
    ]
}

fn print_header(options: &Options) {
    let plan = &options.plan;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!();
    println!(
        "cloakroom-bench {} UTC, {cpu}, {cores} cores",
        time::OffsetDateTime::now_utc().date()
    );
    println!(
        "server on core {} (1 tokio worker), wrk on core {}: {} connections, {} sessions \
         holding a {}-byte token, {} s per route after {} s warm-up, {} round(s) (medians)",
        plan.server_core,
        plan.load_core,
        plan.connections,
        plan.sessions,
        cloakroom_bench::apps::TOKEN_BYTES,
        plan.duration.as_secs(),
        plan.warmup.as_secs(),
        options.rounds
    );
    println!(
        "x axum: ratio to plain axum measured just before on the same route; \
         x rival: the same ratio divided by the bracketed variant's"
    );
    println!();
}

fn print_table(selected: &[Variant], rounds: &[Round]) {
    let fmt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    print!("{:<44}", "variant");
    for route in ROUTES {
        print!(" | {:<34}", route);
    }
    println!();
    print!("{:<44}", "");
    for _ in ROUTES {
        print!(
            " | {:>8} {:>7} {:>7} {:>8}",
            "req/s", "p99 ms", "x axum", "x rival"
        );
    }
    println!();
    for variant in selected {
        let label = match variant.rival {
            Some(rival) => format!("{} [{rival}]", variant.label),
            None => variant.label.to_owned(),
        };
        print!("{label:<44}");
        for i in 0..ROUTES.len() {
            let [rate, p99, vs_plain, vs_rival] = cells(rounds, variant, i);
            print!(
                " | {:>8} {:>7} {:>7} {:>8}",
                fmt(rate, 0),
                fmt(p99, 2),
                fmt(vs_plain, 2),
                fmt(vs_rival, 2)
            );
        }
        println!();
    }
}

fn print_footprints(footprints: &[(&str, Result<Footprint, String>)]) {
    if footprints.is_empty() {
        return;
    }
    println!();
    for (engine, found) in footprints {
        match found {
            Ok(f) => println!(
                "memory per session, {engine}: {:.0} bytes resident for {} bytes of data \
                 = {:.0} bytes beyond the data ({} sessions)",
                f.resident_per_session,
                f.data_bytes,
                f.overhead(),
                f.sessions
            ),
            Err(err) => println!("memory per session, {engine}: not measured: {err}"),
        }
    }
}
