//! A start-position filter that makes large word lists cheap to scan.
//!
//! With tens of thousands of deny words, an unanchored Aho-Corasick scan has
//! no usable prefilter and walks a big automaton for every byte (tens of
//! MB/s, and a DFA of that size thrashes the cache). Most positions of a
//! text cannot start any word, though, and that can be told from the next
//! few bytes alone. Two blocked Bloom filters (three bits in one 64-bit slot
//! per key) hold *keys* of the words:
//!
//! - the *gate*, probed at every position, must stay in the L1 cache (about
//!   8 bits per word; 20,000 words take 32 KB): a word of 8 bytes or more
//!   gives its first 8 bytes, a shorter word its first 4, 3, 2 or 1;
//! - the *confirm* filter, probed only where the gate passed, is roomier
//!   and sharper: a word of 12 bytes or more gives its first 12 bytes (so
//!   that common openings such as `internal ` do not wake the automaton
//!   every time), a word of 8 to 11 bytes a mark that it ends before 12,
//!   a shorter word all its bytes (a two-character Chinese word is gated on
//!   4 of its 6 bytes and confirmed on all 6).
//!
//! The gate is probed without branching (the first-byte table is folded
//! into the slot index), and an *anchored* automaton search runs only where
//! both filters pass. False positives only cost a short anchored walk;
//! there are no false negatives, so matches are exactly those of a full
//! scan.

/// Key lengths for words shorter than 8 bytes, longest first.
const SHORT_KEYS: [usize; 4] = [4, 3, 2, 1];

/// What a key stands for (mixed into its hash).
const SALT_LONG: u64 = 8;
const SALT_ENDS_BEFORE_12: u64 = 9;
const SALT_12: u64 = 12;
const SALT_CONFIRM_SHORT: u64 = 16;

const GATE_BITS_PER_WORD: usize = 8;
const CONFIRM_BITS_PER_WORD: usize = 16;
const MIN_SLOTS_LOG2: u32 = 6;
const MAX_SLOTS_LOG2: u32 = 19;

/// A blocked Bloom filter. Slot 0 is always empty: the gate sends
/// positions whose first byte starts no word there.
#[derive(Debug)]
struct Bloom {
    slots: Vec<u64>,
    /// `64 - log2(number of real slots)`.
    shift: u32,
}

impl Bloom {
    fn new(keys: usize, bits_per_key: usize) -> Self {
        let wanted = (keys * bits_per_key / 64).max(1).next_power_of_two();
        let log2 = wanted
            .trailing_zeros()
            .clamp(MIN_SLOTS_LOG2, MAX_SLOTS_LOG2);
        Bloom {
            slots: vec![0; (1usize << log2) + 1],
            shift: 64 - log2,
        }
    }

    /// Slot index (from 1) and the three bits of `key`: one multiply; the
    /// slot comes from the top bits, the bits from the middle.
    #[inline]
    fn probe(&self, key: u64, salt: u64) -> (usize, u64) {
        let h =
            (key ^ salt.wrapping_mul(0xA076_1D64_78BD_642F)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = 1 + (h >> self.shift) as usize;
        let bits =
            (1u64 << ((h >> 28) & 63)) | (1u64 << ((h >> 34) & 63)) | (1u64 << ((h >> 40) & 63));
        (slot, bits)
    }

    fn insert(&mut self, key: u64, salt: u64) {
        let (slot, bits) = self.probe(key, salt);
        if let Some(s) = self.slots.get_mut(slot) {
            *s |= bits;
        }
    }

    #[inline]
    fn contains(&self, key: u64, salt: u64) -> bool {
        let (slot, bits) = self.probe(key, salt);
        self.slots.get(slot).is_some_and(|s| s & bits == bits)
    }
}

/// A first-byte table and the two filters.
#[derive(Debug)]
pub(crate) struct StartFilter {
    /// `usize::MAX` for bytes some word starts with, else 0 (a slot mask).
    first: [usize; 256],
    gate: Bloom,
    confirm: Bloom,
    /// Short key lengths some word uses, longest first.
    short: Vec<usize>,
    /// Lengths (below 8) of short words, for the confirm stage.
    short_lengths: Vec<usize>,
    /// Some word has at least 8 bytes.
    long: bool,
}

#[inline]
fn mask(k: usize) -> u64 {
    if k >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * k)) - 1
    }
}

/// The (up to) 8 bytes at `at`, little-endian, zero-padded.
#[inline]
fn load(hay: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    match hay.get(at..at + 8) {
        Some(chunk) => buf.copy_from_slice(chunk),
        None => {
            let rest = hay.get(at..).unwrap_or(&[]);
            buf[..rest.len()].copy_from_slice(rest);
        }
    }
    u64::from_le_bytes(buf)
}

/// The gate key length of a word shorter than 8 bytes.
fn short_key(len: usize) -> Option<usize> {
    SHORT_KEYS.iter().copied().find(|&k| k <= len)
}

/// The 12-byte key from the first 8 bytes and the 4 after them.
#[inline]
fn key12(first8: u64, next4: u64) -> u64 {
    first8 ^ (next4 & mask(4)).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
}

impl StartFilter {
    /// A filter for `words` (already folded, as the scanned text will be).
    pub(crate) fn new<S: AsRef<[u8]>>(words: &[S]) -> Self {
        let mut filter = StartFilter {
            first: [0; 256],
            gate: Bloom::new(words.len(), GATE_BITS_PER_WORD),
            confirm: Bloom::new(words.len(), CONFIRM_BITS_PER_WORD),
            short: Vec::new(),
            short_lengths: Vec::new(),
            long: false,
        };
        for word in words {
            let word = word.as_ref();
            let Some(&b) = word.first() else { continue };
            filter.first[usize::from(b)] = usize::MAX;
            let first8 = load(word, 0);
            if word.len() >= 8 {
                filter.long = true;
                filter.gate.insert(first8, SALT_LONG);
                if word.len() >= 12 {
                    filter.confirm.insert(key12(first8, load(word, 8)), SALT_12);
                } else {
                    filter.confirm.insert(first8, SALT_ENDS_BEFORE_12);
                }
            } else if let Some(k) = short_key(word.len()) {
                let len = word.len();
                filter.gate.insert(first8 & mask(k), k as u64);
                filter
                    .confirm
                    .insert(first8 & mask(len), SALT_CONFIRM_SHORT + len as u64);
                if !filter.short.contains(&k) {
                    filter.short.push(k);
                }
                if !filter.short_lengths.contains(&len) {
                    filter.short_lengths.push(len);
                }
            }
        }
        filter.short.sort_unstable_by(|a, b| b.cmp(a));
        filter
    }

    /// The gate for the 8 bytes `first8` at a position: its first byte
    /// must start a word (else slot 0, always empty, is probed) and one of
    /// its keys must be in the gate filter.
    #[inline]
    fn gate<const N: usize>(&self, short: [usize; N], first8: u64) -> bool {
        let slot_mask = self.first[(first8 & 0xFF) as usize];
        let mut hit = false;
        for k in short {
            let (slot, bits) = self.gate.probe(first8 & mask(k), k as u64);
            hit |= self
                .gate
                .slots
                .get(slot & slot_mask)
                .is_some_and(|s| s & bits == bits);
        }
        if self.long {
            let (slot, bits) = self.gate.probe(first8, SALT_LONG);
            hit |= self
                .gate
                .slots
                .get(slot & slot_mask)
                .is_some_and(|s| s & bits == bits);
        }
        hit
    }

    /// The confirm stage at `at`, where the gate passed.
    #[cold]
    fn confirm(&self, hay: &[u8], at: usize) -> bool {
        let remaining = hay.len() - at;
        let first8 = load(hay, at);
        let short = self.short_lengths.iter().any(|&len| {
            let k = short_key(len).unwrap_or(len);
            len <= remaining
                && self.gate.contains(first8 & mask(k), k as u64)
                && self
                    .confirm
                    .contains(first8 & mask(len), SALT_CONFIRM_SHORT + len as u64)
        });
        short
            || (self.long
                && remaining >= 8
                && self.gate.contains(first8, SALT_LONG)
                && (self.confirm.contains(first8, SALT_ENDS_BEFORE_12)
                    || (remaining >= 12
                        && self
                            .confirm
                            .contains(key12(first8, load(hay, at + 8)), SALT_12))))
    }

    /// True when some word may start at byte `at` of `hay`; false means
    /// certainly none does.
    pub(crate) fn may_start(&self, hay: &[u8], at: usize) -> bool {
        match hay.get(at) {
            Some(&b) if self.first[usize::from(b)] != 0 => self.confirm(hay, at),
            _ => false,
        }
    }

    /// The first position at or after `at` where some word may start.
    #[inline]
    pub(crate) fn next_candidate(&self, hay: &[u8], at: usize) -> Option<usize> {
        // Specialise the hot loop for the short key lengths in use, so that
        // the probes unroll.
        let found = match self.short[..] {
            [] => self.scan([], hay, at),
            [a] => self.scan([a], hay, at),
            [a, b] => self.scan([a, b], hay, at),
            [a, b, c] => self.scan([a, b, c], hay, at),
            [a, b, c, d] => self.scan([a, b, c, d], hay, at),
            _ => Err(at),
        };
        let mut at = match found {
            Ok(candidate) => return Some(candidate),
            Err(at) => at,
        };
        // The last 7 bytes.
        while at < hay.len() {
            if self.may_start(hay, at) {
                return Some(at);
            }
            at += 1;
        }
        None
    }

    /// Hot loop while 8 bytes are left. `Err` gives where the last 7 bytes
    /// start.
    #[inline]
    fn scan<const N: usize>(
        &self,
        short: [usize; N],
        hay: &[u8],
        mut at: usize,
    ) -> Result<usize, usize> {
        while let Some(window) = hay.get(at..at + 8) {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(window);
            if self.gate(short, u64::from_le_bytes(buf)) && self.confirm(hay, at) {
                return Ok(at);
            }
            // Stepping by character width would chain every iteration on a
            // load; a plain increment lets iterations overlap, and
            // continuation bytes are cheap misses (slot 0).
            at += 1;
        }
        Err(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives() {
        let words = ["internal only", "机密", "ab", "x", "abcdefg", "abcdefghi"];
        let f = StartFilter::new(&words);
        for hay in [
            "internal only!",
            "机密",
            "ab",
            "x",
            "abcdefgh",
            "zzx",
            "abcdefghi",
        ] {
            let at = hay.len() - hay.trim_start_matches('z').len();
            assert!(f.may_start(hay.as_bytes(), at), "{hay}");
            assert_eq!(f.next_candidate(hay.as_bytes(), 0), Some(at), "{hay}");
        }
    }

    #[test]
    fn short_words_are_confirmed_on_all_their_bytes() {
        // "机官" shares its first 4 bytes with "机密" (the gate key).
        let f = StartFilter::new(&["机密"]);
        assert!(f.may_start("机密".as_bytes(), 0));
        assert!(!f.may_start("机官".as_bytes(), 0));
        // Every short key length in use at once.
        let f = StartFilter::new(&["q", "xy", "mno", "hijk", "abcdefghij"]);
        let hay = b"....q..xy..mno..hijk..abcdefghij........";
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(c) = f.next_candidate(hay, at) {
            found.push(c);
            at = c + 1;
        }
        assert_eq!(found, vec![4, 7, 11, 16, 22]);
    }

    #[test]
    fn mostly_rejects_other_text() {
        let words: Vec<String> = (0..1000).map(|i| format!("word{i:04}x")).collect();
        let f = StartFilter::new(&words);
        let hay = "the quick brown fox jumps over the lazy dog ".repeat(20);
        let hits = (0..hay.len())
            .filter(|&i| f.may_start(hay.as_bytes(), i))
            .count();
        // 880 positions; the first-byte table already drops all but the
        // `w`s, and the Bloom filter nearly all of those.
        assert!(hits < 5, "{hits} of {} positions", hay.len());
        assert!(!f.may_start(b"word", 0), "too short for the 8-byte keys");
        // Stage 2: the right opening but not the right 12 bytes.
        let f = StartFilter::new(&["internal only"]);
        assert!(f.may_start(b"internal only", 0));
        assert!(!f.may_start(b"internal memo", 0));
    }
}
