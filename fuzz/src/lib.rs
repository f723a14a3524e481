//! Fuzzing the decoders that take outside bytes, in the normal `cargo test` run: a harness that
//! feeds a decoder many generated or mutated inputs, each one bounded in time and caught if it
//! panics, and counts what the decoder accepted and rejected.
//!
//! ```text
//!  proptest grammar ──┐
//!                     ├──▶ Fuzz::run ──▶ check(input) ──▶ Verdict::Accepted / Verdict::Rejected(message)
//!  mutate(valid) ─────┘        │                          (or Err: a property the decoder broke)
//!                              └──▶ panics caught, a hang named, counts printed to stderr
//! ```
//!
//! - Inputs come from [`proptest`] strategies (a grammar of near-valid inputs; see [`json`]) and
//!   from [`mutate`] (byte-level mutations of valid inputs: truncation, bit flips, inserted
//!   tokens, huge numbers, deep nesting, duplicated spans, …).
//! - The seed is fixed per decoder, so CI is reproducible; `MILLRACE_FUZZ_SEED` changes it,
//!   `MILLRACE_FUZZ_CASES` the number of inputs (default 100,000), `MILLRACE_FUZZ_TIMEOUT_MS` the
//!   time one input may take (default 10 s, generous for a loaded debug build).
//! - The counts go straight to the process's stderr, so they show in `cargo test` output even
//!   when the test passes (libtest captures `eprintln!`, not writes to the stderr handle).
//!
//! ```
//! use millrace_fuzz::{Fuzz, TestRunner, Verdict};
//!
//! let counts = Fuzz::new("parse u8").with_cases(1_000).run(
//!     || |runner: &mut TestRunner| millrace_fuzz::pick(runner, "[0-9]{0,4}"),
//!     |text: &String| match text.parse::<u8>() {
//!         Ok(_) => Ok(Verdict::Accepted),
//!         Err(e) => Ok(Verdict::Rejected(format!("{text:?}: {e}"))),
//!     },
//! );
//! assert_eq!(counts.generated, 1_000);
//! assert!(counts.accepted > 0 && counts.rejected > 0);
//! ```

pub mod json;
mod mutate;

use std::fmt::{self, Debug};
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use mutate::{INTERESTING, mutate};
pub use proptest;
use proptest::strategy::{Strategy, ValueTree};
pub use proptest::test_runner::TestRunner;
use proptest::test_runner::{Config, RngAlgorithm, TestRng};

/// What a decoder made of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Decoded into a well-formed result (the check verified it).
    Accepted,
    /// Refused, with the message the user would see (a 4xx body, a dead letter's reason, a
    /// config error); an empty message is a failure.
    Rejected(String),
}

/// What one [`Fuzz::run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Inputs fed to the decoder.
    pub generated: usize,
    /// Inputs it accepted.
    pub accepted: usize,
    /// Inputs it rejected with a message.
    pub rejected: usize,
    /// The longest one input took.
    pub slowest: Duration,
}

/// Raw bytes that print as (lossy, escaped, shortened) text in failure messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes: {:?}",
            self.0.len(),
            String::from_utf8_lossy(&self.0)
        )
    }
}

/// One value drawn from `strategy` with `runner`'s random source.
pub fn pick<S: Strategy>(runner: &mut TestRunner, strategy: S) -> S::Value {
    match strategy.new_tree(runner) {
        Ok(tree) => tree.current(),
        // Only filtering strategies give up, and the grammars here do not filter.
        Err(reason) => panic!("strategy gave up: {reason}"),
    }
}

/// A random number below `n` (0 when `n` is 0).
pub fn below(runner: &mut TestRunner, n: usize) -> usize {
    use proptest::prelude::Rng as _;
    if n == 0 {
        0
    } else {
        (runner.rng().next_u64() % n as u64) as usize
    }
}

/// A generator of byte inputs from a grammar: each document drawn from `strategy` (rendered by
/// `render`) is fed once as it is, then `mutations` times [`mutate`]d, which keeps the costly
/// drawing to a fraction of the inputs.
pub fn drawn_and_mutated<S: Strategy>(
    strategy: S,
    mutations: usize,
    render: impl Fn(S::Value) -> Vec<u8>,
) -> impl FnMut(&mut TestRunner) -> Bytes {
    let mut last = Vec::new();
    let mut turn = 0;
    move |runner: &mut TestRunner| {
        let fresh = turn % (mutations + 1) == 0 || last.is_empty();
        turn += 1;
        if fresh {
            last = render(pick(runner, &strategy));
            Bytes(last.clone())
        } else {
            Bytes(mutate(runner, &last))
        }
    }
}

/// One decoder's fuzz run: its name, seed, number of inputs and time bound per input.
#[derive(Clone, Debug)]
pub struct Fuzz {
    name: String,
    seed: u64,
    cases: usize,
    timeout: Duration,
}

/// Failures listed before a run stops.
const MAX_FAILURES: usize = 5;

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(e) => panic!("{name}={text:?}: not a whole number: {e}"),
    }
}

impl Fuzz {
    /// A run named `name` (in messages and counts), with the settings from the environment: the
    /// seed (`MILLRACE_FUZZ_SEED`, default derived from the name), the number of inputs
    /// (`MILLRACE_FUZZ_CASES`, default 100,000) and the time one input may take
    /// (`MILLRACE_FUZZ_TIMEOUT_MS`, default 10,000).
    pub fn new(name: &str) -> Self {
        // FNV-1a of the name: a fixed seed per decoder.
        let derived = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Fuzz {
            name: name.to_owned(),
            seed: env_number("MILLRACE_FUZZ_SEED").unwrap_or(derived),
            cases: env_number("MILLRACE_FUZZ_CASES").map_or(100_000, |n| n as usize),
            timeout: Duration::from_millis(
                env_number("MILLRACE_FUZZ_TIMEOUT_MS").unwrap_or(10_000),
            ),
        }
    }

    /// Sets the number of inputs (overriding `MILLRACE_FUZZ_CASES`).
    pub fn with_cases(mut self, cases: usize) -> Self {
        self.cases = cases;
        self
    }

    /// The number of inputs this run feeds.
    pub fn cases(&self) -> usize {
        self.cases
    }

    /// Feeds `check` the inputs made by the generator that `make_generator` builds (on the fuzz
    /// thread, so strategies need not be `Send`), one at a time, on a thread of their own, and
    /// panics (failing the test) when an input panics, hangs past the time bound, breaks a
    /// property (`check` returns `Err`), or is rejected with an empty message; the message names
    /// the input, its index and the seed. Prints and returns the counts.
    pub fn run<T, M, G, C>(self, make_generator: M, check: C) -> Counts
    where
        T: Debug + Clone + Send + 'static,
        M: FnOnce() -> G + Send + 'static,
        G: FnMut(&mut TestRunner) -> T,
        C: Fn(&T) -> Result<Verdict, String> + Send + 'static,
    {
        let current: Arc<Mutex<Option<(usize, T)>>> = Arc::new(Mutex::new(None));
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            seed: self.seed,
            cases: self.cases,
            current: Arc::clone(&current),
            done: Arc::clone(&done),
        };
        let started = Instant::now();
        std::thread::Builder::new()
            .name(format!("fuzz {}", self.name))
            .spawn(move || {
                let _ = tx.send(worker.feed(make_generator(), check));
            })
            .unwrap_or_else(|e| panic!("cannot start the fuzz thread: {e}"));
        let (mut last_done, mut last_change) = (0, Instant::now());
        let (counts, failures) = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(result) => break result,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("fuzz {}: the fuzz thread died", self.name)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now_done = done.load(Ordering::Relaxed);
            if now_done != last_done {
                (last_done, last_change) = (now_done, Instant::now());
            } else if last_change.elapsed() > self.timeout {
                let input = current.lock().map(|c| format!("{c:?}")).unwrap_or_default();
                panic!(
                    "fuzz {}: one input ran for more than {:?} (seed {}): {}",
                    self.name,
                    self.timeout,
                    self.seed,
                    shorten(&input)
                );
            }
        };
        let line = format!(
            "fuzz {}: {} inputs, {} accepted, {} rejected; slowest input {:.1} ms; {:.1} s (seed {})\n",
            self.name,
            counts.generated,
            counts.accepted,
            counts.rejected,
            counts.slowest.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64(),
            self.seed
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        if !failures.is_empty() {
            panic!(
                "fuzz {} (seed {}): {} failure(s):\n{}",
                self.name,
                self.seed,
                failures.len(),
                failures.join("\n")
            );
        }
        if counts.slowest > self.timeout {
            panic!(
                "fuzz {}: an input took {:?}, more than the bound {:?}",
                self.name, counts.slowest, self.timeout
            );
        }
        counts
    }
}

/// The fuzz thread's side of a run.
struct Worker<T> {
    seed: u64,
    cases: usize,
    current: Arc<Mutex<Option<(usize, T)>>>,
    done: Arc<AtomicUsize>,
}

impl<T: Debug + Clone> Worker<T> {
    fn feed<G, C>(self, mut generate: G, check: C) -> (Counts, Vec<String>)
    where
        G: FnMut(&mut TestRunner) -> T,
        C: Fn(&T) -> Result<Verdict, String>,
    {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(Config::default(), rng);
        let mut counts = Counts::default();
        let mut failures = Vec::new();
        for i in 0..self.cases {
            let input = generate(&mut runner);
            if let Ok(mut current) = self.current.lock() {
                *current = Some((i, input.clone()));
            }
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
            counts.slowest = counts.slowest.max(started.elapsed());
            counts.generated += 1;
            let failure = match outcome {
                Ok(Ok(Verdict::Accepted)) => {
                    counts.accepted += 1;
                    None
                }
                Ok(Ok(Verdict::Rejected(message))) if !message.trim().is_empty() => {
                    counts.rejected += 1;
                    None
                }
                Ok(Ok(Verdict::Rejected(_))) => Some("rejected with an empty message".to_owned()),
                Ok(Err(why)) => Some(why),
                Err(panic) => Some(format!("panicked: {}", panic_message(panic.as_ref()))),
            };
            if let Some(why) = failure {
                failures.push(format!(
                    "  input #{i}: {}\n    input: {}",
                    shorten(&why),
                    shorten(&format!("{input:?}"))
                ));
                if failures.len() >= MAX_FAILURES {
                    break;
                }
            }
            self.done.store(i + 1, Ordering::Relaxed);
        }
        (counts, failures)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// `text` cut to about 1,500 characters.
fn shorten(text: &str) -> String {
    const MAX: usize = 1_500;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_catches_panics() {
        let counts = Fuzz::new("self test").with_cases(200).run(
            || |runner: &mut TestRunner| below(runner, 10),
            |n: &usize| {
                Ok(if *n < 5 {
                    Verdict::Accepted
                } else {
                    Verdict::Rejected(format!("{n} is 5 or more"))
                })
            },
        );
        assert_eq!(counts.generated, 200);
        assert_eq!(counts.accepted + counts.rejected, 200);
        assert!(counts.accepted > 50 && counts.rejected > 50, "{counts:?}");
        let caught = std::panic::catch_unwind(|| {
            Fuzz::new("self test panics").with_cases(100).run(
                || |runner: &mut TestRunner| below(runner, 10),
                |n: &usize| {
                    assert!(*n != 3, "three");
                    Ok(Verdict::Accepted)
                },
            )
        });
        let message = panic_message(caught.expect_err("a panic is a failure").as_ref());
        assert!(message.contains("panicked: three"), "{message}");
        let caught = std::panic::catch_unwind(|| {
            Fuzz::new("self test empty").with_cases(10).run(
                || |_: &mut TestRunner| 0usize,
                |_| Ok(Verdict::Rejected(" ".into())),
            )
        });
        let message = panic_message(caught.expect_err("an empty message fails").as_ref());
        assert!(
            message.contains("rejected with an empty message"),
            "{message}"
        );
    }

    #[test]
    fn names_an_input_that_hangs() {
        let mut fuzz = Fuzz::new("self test hang").with_cases(3);
        fuzz.timeout = Duration::from_millis(300);
        let caught = std::panic::catch_unwind(|| {
            fuzz.run(
                || |runner: &mut TestRunner| below(runner, 1) + 7,
                |_| {
                    std::thread::sleep(Duration::from_secs(2));
                    Ok(Verdict::Accepted)
                },
            )
        });
        let message = panic_message(caught.expect_err("a hang is a failure").as_ref());
        assert!(message.contains("more than 300ms"), "{message}");
        assert!(message.contains("(0, 7)"), "{message}");
    }

    #[test]
    fn same_seed_same_inputs() {
        let draw = || {
            let mut seed = [0u8; 32];
            seed[0] = 9;
            let mut runner = TestRunner::new_with_rng(
                Config::default(),
                TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
            );
            (0..20)
                .map(|_| mutate(&mut runner, b"{\"a\": 1}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }
}
