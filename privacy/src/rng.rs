//! The one entry point for cryptographic randomness in fedsynth. DP noise, Poisson sampling,
//! data keys and nonces all come from [`SecureRng`]: ChaCha12 seeded from the operating
//! system. A fixed seed exists only for tests and for a user's explicit `--seed`, and a
//! `--seed` never reaches the DP noise or the batch sampling: those always come from
//! [`SecureRng::for_dp_noise`], seeded by the operating system, so that knowing the seed
//! never lets anyone subtract the noise. The one exception is a loudly named test switch,
//! [`INSECURE_NOISE_SEED_VAR`], which a release must never have set.

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

    /// The generator for DP noise and Poisson batch sampling: always seeded by the operating
    /// system, whatever seed the run was given — unless the test-only environment variable
    /// [`INSECURE_NOISE_SEED_VAR`] holds a number, in which case the noise is reproducible by
    /// anyone, and a warning says so on stderr every time.
    ///
    /// # Panics
    /// As [`SecureRng::from_os`].
    pub fn for_dp_noise() -> Self {
        match insecure_noise_seed() {
            Some(seed) => {
                eprintln!(
                    "WARNING: {INSECURE_NOISE_SEED_VAR} is set: the DP noise and batch sampling are \
                     reproducible by anyone who knows it. The output carries NO privacy \
                     guarantee. For tests only."
                );
                Self::from_seed(seed ^ 0x6e6f_6973_6521)
            }
            None => Self::from_os(),
        }
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

/// The test-only environment variable that fixes the DP noise and batch sampling (see
/// [`SecureRng::for_dp_noise`]). Its name says what it does to the guarantee.
pub const INSECURE_NOISE_SEED_VAR: &str = "FEDSYNTH_INSECURE_REPRODUCIBLE_NOISE_SEED";

/// The value of [`INSECURE_NOISE_SEED_VAR`], when it is set to a number.
pub fn insecure_noise_seed() -> Option<u64> {
    std::env::var(INSECURE_NOISE_SEED_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
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
