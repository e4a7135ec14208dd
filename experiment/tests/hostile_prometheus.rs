//! The real `sms-experiment` binary against a Prometheus that lies or attacks: negative, NaN
//! and absurd counts, 200 MB answers and an answer that drips a few bytes a second. A real
//! Prometheus cannot be made to answer these, so a small fake HTTP/1.1 server on a free port
//! of 127.0.0.1 answers every query with the case's body (generated on the fly, never held
//! whole). Every case must end in exit code 3 with a message naming the query, within
//! `--timeout` (2 s here; asserted under 4 s of wall time), with a peak RSS under 100 MiB.
//!
//! The peak RSS is the larger of two readings: the child's `ru_maxrss` from `wait4`, which
//! the kernel keeps to the very end of the process (it also counts this test process'
//! anonymous memory at the fork, a few MiB, so it errs high), and `VmHWM` of
//! `/proc/<pid>/status`, polled every 5 ms while the child runs (the binary's own peak up
//! to the last poll). Each case prints its figures
//! (`cargo test -p sms-experiment --test hostile_prometheus -- --nocapture`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TIMEOUT: &str = "2s";
/// `--timeout` plus room for starting the binary on a busy machine.
const WALL_LIMIT: Duration = Duration::from_secs(4);
const RSS_LIMIT_KIB: u64 = 100 * 1024;
const HUGE: u64 = 200 * 1000 * 1000;

/// What the fake writes after the response head, given the socket; `Err` when the client
/// has gone. The counter adds up the body bytes written.
type Writer = dyn Fn(&mut TcpStream, &AtomicU64) -> std::io::Result<()> + Send + Sync;

/// The fake Prometheus: answers every request on its port with the same head and body.
struct Fake {
    port: u16,
    sent: Arc<AtomicU64>,
}

impl Fake {
    fn start(head: String, body: Arc<Writer>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        // The accept loop lives as long as the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (head, body, counter) = (head.clone(), body.clone(), counter.clone());
                std::thread::spawn(move || {
                    if read_request(&mut stream).is_ok() && stream.write_all(head.as_bytes()).is_ok() {
                        let _ = body(&mut stream, &counter);
                    }
                });
            }
        });
        Fake { port, sent }
    }

    /// A complete JSON body, close-delimited.
    fn json(body: &'static str) -> Fake {
        Fake::start(head(None), Arc::new(move |s: &mut TcpStream, n: &AtomicU64| send(s, n, body.as_bytes())))
    }

    /// `prefix`, then `unit` repeated up to `HUGE` bytes, then `suffix`: written 64 KiB at a
    /// time from one reused buffer. `declare` sends the length as `Content-Length`.
    fn huge(prefix: &'static str, unit: &'static str, suffix: &'static str, declare: bool) -> Fake {
        let chunk: Vec<u8> =
            unit.as_bytes().iter().copied().cycle().take(64 * 1024 / unit.len() * unit.len()).collect();
        let len = declare.then_some(HUGE);
        Fake::start(
            head(len),
            Arc::new(move |s: &mut TcpStream, n: &AtomicU64| {
                send(s, n, prefix.as_bytes())?;
                let mut left = HUGE - (prefix.len() + suffix.len()) as u64;
                while left > 0 {
                    let part = &chunk[..chunk.len().min(left as usize)];
                    send(s, n, part)?;
                    left -= part.len() as u64;
                }
                send(s, n, suffix.as_bytes())
            }),
        )
    }

    fn sent_bytes(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

fn head(content_length: Option<u64>) -> String {
    let len = content_length.map(|n| format!("Content-Length: {n}\r\n")).unwrap_or_default();
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{len}Connection: close\r\n\r\n")
}

fn send(s: &mut TcpStream, counter: &AtomicU64, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes)?;
    counter.fetch_add(bytes.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// Reads one request (head and `Content-Length` body) so that the answer is not taken for a
/// refusal of the request.
fn read_request(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 || buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
}

/// What a run of the binary did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    wall: Duration,
    /// `ru_maxrss` from wait4 (KiB): an upper bound of the peak.
    max_rss_kib: u64,
    /// Highest `VmHWM` seen while polling (KiB).
    vm_hwm_kib: u64,
}

impl Run {
    /// The peak RSS: the larger of the two readings (the kernel's RSS counters are
    /// approximate, so they may differ by a few hundred KiB either way).
    fn peak_kib(&self) -> u64 {
        self.max_rss_kib.max(self.vm_hwm_kib)
    }
}

fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the binary against `fake`, reaping it with wait4 for its rusage; killed (by its PID)
/// if still running after 30 s, so that a regression fails instead of hanging.
#[allow(clippy::zombie_processes, reason = "reaped by wait4 below, which also gives its rusage")]
fn run(name: &str, fake: &Fake, extra: &[&str]) -> Run {
    let start = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sms-experiment"));
    command
        .args(["--prometheus", &format!("http://127.0.0.1:{}", fake.port), "--timeout", TIMEOUT])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A pre_exec hook makes std fork instead of posix_spawn (vfork): the kernel then adds to
    // the child's ru_maxrss the anonymous memory this process has at the fork, not its
    // whole lifetime peak (which a panic's backtrace, reading debug info, inflates).
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe { command.pre_exec(|| Ok(())) };
    let mut child = command.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let (mut vm_hwm, mut killed) = (0, false);
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            break (status, usage);
        }
        vm_hwm = vm_hwm.max(vm_hwm_kib(pid).unwrap_or(0));
        if !killed && start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed();
    let run = Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        vm_hwm_kib: vm_hwm,
    };
    println!(
        "{name}: exit {:?} after {:.2} s, peak RSS {:.1} MiB (ru_maxrss {:.1} MiB, VmHWM polled {:.1} MiB), \
         the fake sent {:.1} MiB\n  {}",
        run.code,
        run.wall.as_secs_f64(),
        run.peak_kib() as f64 / 1024.0,
        run.max_rss_kib as f64 / 1024.0,
        run.vm_hwm_kib as f64 / 1024.0,
        fake.sent_bytes() as f64 / (1 << 20) as f64,
        run.stderr.trim_end()
    );
    run
}

/// Exit 3, nothing on stdout, a message naming the first query and saying `what`, within
/// the deadline and the memory bound.
fn assert_refused(run: &Run, what: &str) {
    assert_eq!(run.code, Some(3), "exit code 3 = error, not a verdict: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "no verdict may be printed: {}", run.stdout);
    assert!(run.stderr.contains(what), "the message should say {what:?}: {}", run.stderr);
    assert!(run.stderr.contains("increase(sms_requests_total"), "the message should name the query: {}", run.stderr);
    assert!(run.wall < WALL_LIMIT, "took {:?}, --timeout is {TIMEOUT}", run.wall);
    assert!(run.peak_kib() < RSS_LIMIT_KIB, "peak RSS {} KiB", run.peak_kib());
}

/// A one-series answer with these labels and this value.
macro_rules! vector {
    ($labels:literal, $value:literal) => {
        concat!(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":"#,
            $labels,
            r#","value":[1700000000,""#,
            $value,
            r#""]}]}}"#
        )
    };
}

#[test]
fn a_sane_answer_still_gives_a_verdict() {
    // The control: the fake itself works, so the refusals below are the CLI's doing.
    let fake = Fake::json(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
    let run = run("empty vectors", &fake, &["--min-duration", "0"]);
    assert_eq!(run.code, Some(1), "no traffic yet = KEEP RUNNING: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("verdict: KEEP RUNNING"), "{}", run.stdout);
    assert!(run.wall < WALL_LIMIT && run.peak_kib() < RSS_LIMIT_KIB);
}

#[test]
fn negative_counts_are_an_error_not_a_promotion() {
    let fake = Fake::json(vector!(r#"{"version":"v2","status":"503"}"#, "-100000"));
    let run = run("negative count", &fake, &[]);
    assert_refused(&run, "negative count");
    assert!(run.stderr.contains(r#"status="503""#), "the series is named: {}", run.stderr);
}

#[test]
fn nan_counts_are_an_error() {
    let fake = Fake::json(vector!(r#"{"version":"v2"}"#, "NaN"));
    assert_refused(&run("NaN count", &fake, &[]), "NaN is not a count");
}

#[test]
fn absurd_counts_are_an_error_not_a_roll_back() {
    let fake = Fake::json(vector!(r#"{"version":"v2","status":"200"}"#, "1e308"));
    let run = run("1e308 count", &fake, &[]);
    assert_refused(&run, "absurd count (1e308)");
    assert!(!run.stderr.contains("000000000000000000"), "no 300-digit figures: {}", run.stderr);
}

#[test]
fn infinite_counts_and_absurd_bucket_bounds_are_errors() {
    let fake = Fake::json(vector!(r#"{"version":"v2"}"#, "+Inf"));
    assert_refused(&run("+Inf count", &fake, &[]), "inf is not a count");
    let fake = Fake::json(vector!(r#"{"version":"v2","le":"NaN"}"#, "5"));
    assert_refused(&run("NaN bucket bound", &fake, &[]), "bucket bound");
}

#[test]
fn a_200_mb_answer_of_small_series_is_refused_while_it_streams() {
    let fake = Fake::huge(
        r#"{"status":"success","data":{"resultType":"vector","result":["#,
        r#"{"metric":{"version":"v2","status":"200"},"value":[1700000000,"1"]},"#,
        r#"{"metric":{},"value":[1700000000,"1"]}]}}"#,
        false,
    );
    let run = run("200 MB of small series", &fake, &[]);
    assert_refused(&run, "longer than 4 MiB");
    assert!(fake.sent_bytes() < HUGE / 4, "the CLI stopped reading: the fake sent {} bytes", fake.sent_bytes());
}

#[test]
fn a_200_mb_single_label_is_refused_while_it_streams() {
    let fake = Fake::huge(
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"version":""#,
        "v",
        r#""},"value":[1700000000,"1"]}]}}"#,
        false,
    );
    let run = run("200 MB single label", &fake, &[]);
    assert_refused(&run, "longer than 4 MiB");
    assert!(fake.sent_bytes() < HUGE / 4, "the CLI stopped reading: the fake sent {} bytes", fake.sent_bytes());
}

#[test]
fn a_declared_200_mb_answer_is_refused_before_reading_it() {
    let fake = Fake::huge(r#"{"status":"success","data":"#, " ", "null}", true);
    assert_refused(&run("200 MB Content-Length", &fake, &[]), "longer than 4 MiB");
}

#[test]
fn too_many_series_are_refused() {
    // 2,000 series in 120 KB: under the size bound, over the series bound.
    let series = r#"{"metric":{"version":"v2","status":"200"},"value":[1700000000,"1"]}"#;
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        vec![series; 2000].join(",")
    );
    let fake = Fake::json(Box::leak(body.into_boxed_str()));
    assert_refused(&run("2,000 series", &fake, &[]), "more than 1000 series");
}

#[test]
fn a_dripping_answer_is_cut_at_the_timeout() {
    // A few bytes a second of a valid-looking answer, for as long as the client listens.
    let fake = Fake::start(
        head(None),
        Arc::new(|s: &mut TcpStream, n: &AtomicU64| {
            for byte in r#"{"status":"success","data":{"resultType":"vector","result":["#.bytes().cycle().take(400) {
                send(s, n, &[byte])?;
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(())
        }),
    );
    let run = run("drip, 4 bytes/s", &fake, &[]);
    assert_refused(&run, "within the deadline of 2 s (--timeout)");
    assert!(run.wall >= Duration::from_secs(2), "cut before the deadline? {:?}", run.wall);
}

#[test]
fn an_error_text_cannot_write_to_the_terminal() {
    let fake =
        Fake::json(r#"{"status":"error","errorType":"bad_data","error":"\u001b[2J\u001b[31mall good, PROMOTE"}"#);
    let run = run("escape codes in the error", &fake, &[]);
    assert_refused(&run, "Prometheus refused");
    assert!(!run.stderr.contains('\u{1b}'), "control characters are escaped: {:?}", run.stderr);
}
