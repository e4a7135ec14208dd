//! A bounded fuzz run (a property test with a seeded generator, no extra dependency) over
//! what every request goes through first: protobuf decoding of `ClassifyRequest` and the
//! text rules. Hostile input must never panic, and what the rules accept must be what the
//! models were trained on (trimmed, single spaces, within the limit, stable when re-checked).

use std::time::{Duration, Instant};

use prost::Message;
use sms_proto::{MAX_TEXT_CHARS, TextError, normalize_text, v1::ClassifyRequest, validate_text};

/// How long each property runs (bounded: `make test` stays quick), and at most how often.
const BUDGET: Duration = Duration::from_secs(2);
const MAX_CASES: u64 = 300_000;

/// xorshift64*: deterministic, so a failure can be replayed from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Text built from the characters that matter: ASCII, every kind of whitespace the
    /// rules know, NUL, control and multi-byte characters, emoji; short and long.
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "9", " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{2003}", "\u{3000}", "\u{1c}", "\u{1f}",
            "\u{85}", "\u{2028}", "\0", "\u{7f}", "£", "é", "ß", "中", "😀", "\u{200b}", "\u{feff}", "WIN", "!",
        ];
        let len = match self.below(10) {
            0 => 900 + self.below(300) as usize, // around the limit
            1 => 0,
            _ => self.below(40) as usize,
        };
        (0..len).map(|_| PIECES[self.below(PIECES.len() as u64) as usize]).collect()
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.below(64) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn run(name: &str, seed: u64, mut case: impl FnMut(&mut Rng)) {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut n = 0;
    while n < MAX_CASES && started.elapsed() < BUDGET {
        case(&mut rng);
        n += 1;
    }
    println!("{name}: {n} cases in {:?} (seed {seed:#x}), no panic", started.elapsed());
    assert!(n >= 1_000, "{name}: only {n} cases ran");
}

#[test]
fn text_rules_never_panic_and_accept_only_what_training_saw() {
    run("validate_text", 0x5eed_0001, |rng| {
        let text = rng.text();
        match validate_text(&text) {
            Ok(normalized) => {
                assert!(!normalized.is_empty());
                assert_eq!(normalized, normalized.trim(), "{text:?}");
                assert!(!normalized.contains("  ") && !normalized.contains('\0'), "{text:?}");
                assert!(normalized.chars().count() <= MAX_TEXT_CHARS);
                assert_eq!(normalize_text(&normalized), normalized, "normalizing twice changes {text:?}");
                assert_eq!(validate_text(&normalized), Ok(normalized.clone()));
            }
            Err(TextError::Empty) => assert!(normalize_text(&text).is_empty(), "{text:?}"),
            Err(TextError::NulCharacter) => assert!(text.contains('\0')),
            Err(TextError::TooLong { chars }) => assert!(chars > MAX_TEXT_CHARS),
        }
    });
}

#[test]
fn request_decoding_never_panics_on_hostile_bytes() {
    run("ClassifyRequest::decode", 0x5eed_0002, |rng| {
        // Half random bytes, half a valid message with bytes flipped, cut or appended.
        let bytes = if rng.below(2) == 0 {
            rng.bytes()
        } else {
            let mut b = ClassifyRequest { text: rng.text() }.encode_to_vec();
            if !b.is_empty() {
                let i = rng.below(b.len() as u64) as usize;
                match rng.below(3) {
                    0 => b[i] ^= 1 << rng.below(8),
                    1 => b.truncate(i),
                    _ => b.extend(rng.bytes()),
                }
            }
            b
        };
        if let Ok(request) = ClassifyRequest::decode(bytes.as_slice()) {
            // Whatever decodes is then checked by the text rules, which must not panic either.
            let _ = validate_text(&request.text);
        }
    });
}
