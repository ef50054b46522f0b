//! Name suffixes for generated children (`web-7d4b9c8f5-x2kq9`), and the alphabet they share
//! with the pod-template-hash.
//!
//! Kubernetes draws both from `bcdfghjklmnpqrstvwxz2456789`: no vowels (so no accidental
//! words) and no `0`, `1`, `3` (easily misread). Suffixes must be random in production but
//! repeatable in tests, so controllers take a [`NameGenerator`] instead of calling a random
//! source themselves: tests seed it with a constant, the loop with something unpredictable.

/// The characters of generated names and hashes (`k8s.io/apimachinery/pkg/util/rand`).
pub const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// How many random characters a generated name gets.
pub const SUFFIX_LEN: usize = 5;

/// The longest base a generated name keeps, so base + suffix fits in 63 characters (a DNS
/// label), as the API server truncates `generateName`.
pub const MAX_BASE_LEN: usize = 63 - SUFFIX_LEN;

/// A seeded source of name suffixes (xorshift64*: tiny, fast, good enough for names; not
/// for secrets). Collisions are harmless: the create fails with AlreadyExists and the next
/// pass draws again.
#[derive(Debug, Clone)]
pub struct NameGenerator {
    state: u64,
}

impl NameGenerator {
    /// A generator whose sequence is fixed by `seed` (tests pass a constant; the loop can pass
    /// e.g. the nanoseconds of its start time).
    pub fn from_seed(seed: u64) -> NameGenerator {
        // xorshift never leaves the all-zero state, so zero gets a fixed odd constant.
        let state = if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        };
        NameGenerator { state }
    }

    /// Five random characters of [`ALPHANUMS`].
    pub fn suffix(&mut self) -> String {
        (0..SUFFIX_LEN)
            .map(|_| {
                let i = (self.next() % ALPHANUMS.len() as u64) as usize;
                char::from(ALPHANUMS[i])
            })
            .collect()
    }

    /// `base` (ending in `-`, as a `generateName`) plus a suffix, with the base cut so the
    /// whole name stays a valid DNS label.
    pub fn name(&mut self, generate_name: &str) -> String {
        let base: String = generate_name.chars().take(MAX_BASE_LEN).collect();
        format!("{base}{}", self.suffix())
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Kubernetes' `SafeEncodeString`: each character of `s` mapped into [`ALPHANUMS`] by its
/// code point. Used to render the decimal digits of a hash (`"3214"` → `"7658"`).
pub fn safe_encode(s: &str) -> String {
    s.chars()
        .map(|c| char::from(ALPHANUMS[c as usize % ALPHANUMS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_names() {
        let mut a = NameGenerator::from_seed(42);
        let mut b = NameGenerator::from_seed(42);
        let first = a.name("web-");
        assert_eq!(first, b.name("web-"));
        assert_ne!(first, a.name("web-"), "consecutive names differ");
        assert_eq!(first.len(), "web-".len() + SUFFIX_LEN);
        assert!(first[4..].bytes().all(|c| ALPHANUMS.contains(&c)));
    }

    #[test]
    fn long_bases_are_cut_to_a_dns_label() {
        let mut g = NameGenerator::from_seed(0);
        let name = g.name(&"x".repeat(100));
        assert_eq!(name.len(), 63);
    }

    #[test]
    fn safe_encoding_maps_digits_like_kubernetes() {
        // '0' is code point 48, 48 % 27 = 21 → '4'; '6' is 54 % 27 = 0 → 'b'.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }
}
