//! A small deterministic mutator for the bounded run under `cargo test`:
//! from a seed corpus, it makes inputs by bit flips, byte changes,
//! truncations, duplicated and deleted ranges, splices of two corpus
//! entries, inserted target tokens, and plain random bytes. The same seed
//! gives the same inputs, so a failure is found again by its case number.

/// xorshift64*: enough randomness for mutations, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Bytes worth trying in place of any other.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'\n', b'0', b'-', b'{', b'[',
];

/// Inputs grow to at most this many bytes.
pub const MAX_LEN: usize = 4_096;

/// One mutated input, made from `corpus` (not empty) and `tokens`.
pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    if rng.below(20) == 0 {
        let len = rng.below(64);
        return (0..len).map(|_| rng.next_u64() as u8).collect();
    }
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut data, corpus, tokens);
    }
    data.truncate(MAX_LEN);
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], tokens: &[&[u8]]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        3 => data.truncate(rng.below(len + 1)),
        4 if len > 0 => {
            let start = rng.below(len);
            let end = start + rng.below(len - start + 1);
            data.drain(start..end);
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = start + rng.below((len - start).min(64) + 1);
            let copy = data[start..end].to_vec();
            let at = rng.below(data.len() + 1);
            data.splice(at..at, copy);
        }
        6 => {
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        7 if !tokens.is_empty() => {
            let token = tokens[rng.below(tokens.len())];
            let at = rng.below(len + 1);
            data.splice(at..at, token.iter().copied());
        }
        _ => {
            let at = rng.below(len + 1);
            let byte = rng.next_u64() as u8;
            data.insert(at, byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let corpus = vec![b"{\"a\":1}".to_vec(), b"[1,2]".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..100)
                .map(|_| mutate(&mut rng, &corpus, &[b"x"]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn inputs_stay_under_the_length_bound() {
        let corpus = vec![vec![b'a'; MAX_LEN]];
        let mut rng = Rng::new(1);
        for _ in 0..1_000 {
            assert!(mutate(&mut rng, &corpus, &[b"token"]).len() <= MAX_LEN);
        }
    }
}
