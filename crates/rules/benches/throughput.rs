//! Throughput of rule checking, single thread, on generated data.
//!
//! `cargo bench -p beamline-rules` runs the full benchmark: the shipped
//! `default` rule set plus a `deny_words` rule over a generated
//! 20,000-entry English/Chinese word list, applied to 100 MB of generated
//! mixed-language outputs (about 4 KB each). Everything is generated in
//! memory from a fixed seed, so runs are comparable. Without `--bench`
//! (e.g. `cargo test --benches`) it runs on 1 MB as a smoke test.
//! Each figure is the best of `RULES_BENCH_REPEAT` passes (3), wall clock
//! and this thread's CPU time (the machine may be shared). Set
//! `RULES_BENCH_MB` to change the size and `RULES_BENCH_SETS` (a comma list
//! of `full`, `words`, `default` or paths of other rule files) to pick the
//! runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use beamline_rules::RuleSet;

const WORDS: usize = 20_000;
const DOC_BYTES: usize = 4_096;

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "re", "tan", "su", "vel", "dor", "pi", "na", "ex", "qu", "zor", "bel", "ti",
    "ro", "sa", "men", "gal", "fi", "ul", "tra", "po", "ne", "cri", "do", "ve", "lan", "mo", "is",
];

fn english_word(rng: &mut Rng, syllables: usize) -> String {
    (0..syllables)
        .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
        .collect()
}

/// One of 3,000 common-range CJK ideographs.
fn cjk(rng: &mut Rng) -> char {
    char::from_u32(0x4E00 + rng.below(3_000) as u32).unwrap_or('字')
}

fn word_list(rng: &mut Rng) -> Vec<String> {
    let mut words = Vec::with_capacity(WORDS);
    for i in 0..WORDS {
        if i % 2 == 0 {
            let a = english_word(rng, 3);
            let syllables = 2 + rng.below(2);
            let b = english_word(rng, syllables);
            words.push(format!("{a} {b}"));
        } else {
            let n = 3 + rng.below(2);
            words.push((0..n).map(|_| cjk(rng)).collect());
        }
    }
    words
}

fn document(rng: &mut Rng, words: &[String]) -> String {
    let mut doc = String::with_capacity(DOC_BYTES + 256);
    if rng.below(4) == 0 {
        doc.push_str("<think>\n");
        for _ in 0..8 {
            doc.push_str(&english_word(rng, 2));
            doc.push(' ');
        }
        doc.push_str("\n</think>\n\n");
    }
    while doc.len() < DOC_BYTES {
        match rng.below(10) {
            0..=4 => {
                // An English sentence.
                let n = 6 + rng.below(10);
                for i in 0..n {
                    let syllables = 1 + rng.below(3);
                    let mut w = english_word(rng, syllables);
                    if i == 0 {
                        w[..1].make_ascii_uppercase();
                    }
                    doc.push_str(&w);
                    doc.push(if i + 1 == n { '.' } else { ' ' });
                }
                doc.push(' ');
            }
            5..=8 => {
                // A Chinese sentence with full-width punctuation.
                let n = 8 + rng.below(20);
                for i in 0..n {
                    doc.push(cjk(rng));
                    if i == n / 2 {
                        doc.push('，');
                    }
                }
                doc.push('。');
            }
            _ => match rng.below(4) {
                0 => doc.push_str("Contact ops.team@example.com today. "),
                1 => doc.push_str("Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３。"),
                2 => {
                    // A banned entry, now and then.
                    doc.push_str(&words[rng.below(words.len())]);
                    doc.push_str(". ");
                }
                _ => doc.push_str("Emoji 😀 and café.\n\n"),
            },
        }
    }
    doc
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("beamline-rules-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn rule_set(dir: &Path, words: &[String], with_default: bool) -> RuleSet {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/rules");
    let default = std::fs::read_to_string(configs.join("default.toml")).unwrap_or_default();
    let _ = std::fs::write(dir.join("bench-words.txt"), words.join("\n"));
    let mut toml = if with_default { default } else { String::new() };
    toml.push_str(
        "\n[[rule]]\nname = \"bench-words\"\nkind = \"deny_words\"\nwords_file = \"bench-words.txt\"\naction = \"reject\"\n",
    );
    match RuleSet::from_toml_str(&toml, dir, "bench") {
        Ok(set) => set,
        Err(e) => panic!("bench rule set: {e}"),
    }
}

/// CPU time of this thread in seconds (Linux), to see past a busy machine.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Checks every document once; returns (wall s, cpu s, passed, hits).
fn pass(set: &RuleSet, docs: &[String]) -> (f64, f64, usize, usize) {
    let cpu_start = thread_cpu_secs();
    let start = Instant::now();
    let mut passed = 0usize;
    let mut hits = 0usize;
    for doc in docs {
        let v = set.check(doc, None);
        passed += usize::from(v.passed);
        hits += v.hits.len();
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, thread_cpu_secs()) {
        (Some(a), Some(b)) => b - a,
        _ => wall,
    };
    (wall, cpu, passed, hits)
}

/// Best of `repeat` passes (the machine may be shared).
fn run(label: &str, set: &RuleSet, docs: &[String], bytes: usize, repeat: usize) {
    let mut best = (f64::INFINITY, f64::INFINITY, 0, 0);
    for _ in 0..repeat.max(1) {
        let r = pass(set, docs);
        if r.0 < best.0 {
            best.0 = r.0;
        }
        if r.1 < best.1 {
            best.1 = r.1;
        }
        best.2 = r.2;
        best.3 = r.3;
    }
    let (wall, cpu, passed, hits) = best;
    let mb = bytes as f64 / 1e6;
    println!(
        "{label:<22} {mb:>6.1} MB: wall {wall:>6.3} s = {:>6.1} MB/s, cpu {cpu:>6.3} s = {:>6.1} MB/s  ({} docs, {passed} passed, {hits} hits)",
        mb / wall,
        mb / cpu,
        docs.len()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mb: usize = std::env::var("RULES_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100 } else { 1 });
    let repeat: usize = std::env::var("RULES_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 3 } else { 1 });
    let mut rng = Rng(0x5EED_2026_1129);
    let words = word_list(&mut rng);
    let target = mb * 1_000_000;
    let mut docs = Vec::with_capacity(target / DOC_BYTES + 1);
    let mut bytes = 0;
    while bytes < target {
        let doc = document(&mut rng, &words);
        bytes += doc.len();
        docs.push(doc);
    }
    let dir = temp_dir();
    let load = Instant::now();
    let full_set = rule_set(&dir, &words, true);
    println!(
        "loaded default + {WORDS} words in {:.3} s",
        load.elapsed().as_secs_f64()
    );
    let words_only = rule_set(&dir, &words, false);
    let default_only = match RuleSet::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/rules/default.toml"),
    ) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    // RULES_BENCH_SETS=full,words,default picks the runs (for profiling).
    let sets = std::env::var("RULES_BENCH_SETS").unwrap_or_else(|_| "full,words,default".into());
    for set in sets.split(',') {
        match set {
            "full" => run("default + 20k words", &full_set, &docs, bytes, repeat),
            "words" => run("20k words only", &words_only, &docs, bytes, repeat),
            "default" => run("default only", &default_only, &docs, bytes, repeat),
            // Any other entry is a path to a rule file to measure on its own.
            path if path.ends_with(".toml") => match RuleSet::load(path) {
                Ok(custom) => run(path, &custom, &docs, bytes, repeat),
                Err(e) => eprintln!("{e}"),
            },
            other => eprintln!("unknown set {other:?} in RULES_BENCH_SETS"),
        }
    }
}
