//! The one entry point for cryptographic randomness in fedsynth. DP noise, Poisson sampling,
//! data keys and nonces all come from [`SecureRng`]: ChaCha12 seeded from the operating
//! system. A fixed seed exists only for tests and for a user's explicit `--seed`.

use rand::{CryptoRng, RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha12Rng;

/// A cryptographically secure generator (ChaCha12).
#[derive(Debug, Clone)]
pub struct SecureRng(ChaCha12Rng);

impl SecureRng {
    /// Seeded from the operating system's entropy source.
    ///
    /// # Panics
    /// If the operating system cannot provide entropy, which leaves no safe way on.
    pub fn from_os() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .expect("the operating system's entropy source failed");
        Self(ChaCha12Rng::from_seed(seed))
    }

    /// Deterministic generator for tests and `--seed`: the same seed gives the same stream.
    /// Noise drawn this way is reproducible by anyone who knows the seed.
    pub fn from_seed(seed: u64) -> Self {
        Self(ChaCha12Rng::seed_from_u64(seed))
    }

    /// An independent child generator (for another thread or stream), derived from this one.
    pub fn fork(&mut self) -> Self {
        let mut seed = [0u8; 32];
        self.0.fill_bytes(&mut seed);
        Self(ChaCha12Rng::from_seed(seed))
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}

impl RngCore for SecureRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst);
    }
}

impl CryptoRng for SecureRng {}
