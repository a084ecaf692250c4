//! Which request comes next: the choice of source and destination accounts for each workload,
//! drawn from a seeded `StdRng` so that the same seed sends the same sequence.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::Workload;

/// In the mixed workload, the share of requests that are reads; half and half exercises both
/// paths equally (the contract names no ratio).
pub const MIXED_READ_SHARE: f64 = 0.5;

/// One request of the load, in terms of account indexes `0..accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Transfer { source: usize, destination: usize },
    Batch(Vec<(usize, usize)>),
    Read { account: usize },
}

/// Zipf sampler over keys `0..n`: key k (0-based) has weight 1/(k+1)^s. `rand_distr`'s
/// rejection-inversion sampler draws ranks `1..=n` in constant memory and time.
#[derive(Debug, Clone, Copy)]
pub struct Zipf(rand_distr::Zipf<f64>);

impl Zipf {
    /// `n` ≥ 1 keys, exponent `s` > 0 (the command line checks both).
    pub fn new(n: usize, s: f64) -> Result<Self, rand_distr::ZipfError> {
        rand_distr::Zipf::new(n as u64, s).map(Zipf)
    }

    pub fn sample(&self, rng: &mut StdRng) -> usize {
        // A rank is a whole number in 1..=n, held as an f64.
        let rank: f64 = rng.sample(self.0);
        (rank as usize).saturating_sub(1)
    }
}

#[derive(Debug)]
pub struct Picker {
    rng: StdRng,
    workload: Workload,
    accounts: usize,
    batch_size: usize,
    zipf: Option<Zipf>,
}

impl Picker {
    /// `accounts` ≥ 2 (a transfer needs two distinct accounts).
    pub fn new(workload: Workload, accounts: usize, zipf_exponent: f64, batch_size: usize, seed: u64) -> Self {
        // `Config::validate` refuses an exponent or an account count this distribution would
        // refuse, so under `tally-loadtest` it always exists for the Zipf workload.
        let zipf = (workload == Workload::Zipf).then(|| Zipf::new(accounts, zipf_exponent).ok()).flatten();
        Self { rng: StdRng::seed_from_u64(seed), workload, accounts, batch_size, zipf }
    }

    /// A draw in `[0, 1)` for callers' own decisions (the retry share), from the same stream.
    pub fn chance(&mut self) -> f64 {
        self.rng.r#gen()
    }

    pub fn next_op(&mut self) -> Op {
        match self.workload {
            Workload::Uniform => self.uniform_transfer(),
            Workload::Zipf => {
                let source = self.zipf_pick();
                let mut destination = self.zipf_pick();
                while destination == source {
                    destination = self.zipf_pick();
                }
                Op::Transfer { source, destination }
            }
            Workload::Hot => {
                let other = self.rng.gen_range(1..self.accounts);
                if self.rng.gen_bool(0.5) {
                    Op::Transfer { source: 0, destination: other }
                } else {
                    Op::Transfer { source: other, destination: 0 }
                }
            }
            Workload::Batch => Op::Batch(
                (0..self.batch_size)
                    .map(|_| match self.uniform_transfer() {
                        Op::Transfer { source, destination } => (source, destination),
                        _ => (0, 1),
                    })
                    .collect(),
            ),
            Workload::Mixed => {
                if self.rng.gen_bool(MIXED_READ_SHARE) {
                    Op::Read { account: self.rng.gen_range(0..self.accounts) }
                } else {
                    self.uniform_transfer()
                }
            }
        }
    }

    fn zipf_pick(&mut self) -> usize {
        match &self.zipf {
            Some(z) => z.sample(&mut self.rng),
            None => self.rng.gen_range(0..self.accounts),
        }
    }

    fn uniform_transfer(&mut self) -> Op {
        let source = self.rng.gen_range(0..self.accounts);
        // Uniform over the other accounts: draw from n-1 and skip the source.
        let mut destination = self.rng.gen_range(0..self.accounts - 1);
        if destination >= source {
            destination += 1;
        }
        Op::Transfer { source, destination }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn zipf_top_key_takes_its_expected_share() {
        let (n, s, draws) = (100, 1.0, 200_000);
        let zipf = Zipf::new(n, s).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; n];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        let expected_top = 1.0 / harmonic; // ≈ 0.193 for n = 100
        let top = f64::from(counts[0]) / f64::from(draws);
        assert!((top - expected_top).abs() < 0.01, "top share {top}, expected {expected_top}");
        // Key 2 gets half of key 1's share under s = 1.
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((ratio - 0.5).abs() < 0.03, "ratio {ratio}");
        assert!(counts[0] > counts[n - 1] * 50);
    }

    #[test]
    fn a_seed_reproduces_the_sequence_and_transfers_never_loop() {
        let mut a = Picker::new(Workload::Uniform, 5, 1.0, 10, 42);
        let mut b = Picker::new(Workload::Uniform, 5, 1.0, 10, 42);
        for _ in 0..1000 {
            let op = a.next_op();
            assert_eq!(op, b.next_op());
            let Op::Transfer { source, destination } = op else { panic!("uniform sends transfers") };
            assert_ne!(source, destination);
            assert!(source < 5 && destination < 5);
        }
    }

    #[test]
    fn the_hot_account_is_in_every_transfer() {
        let mut p = Picker::new(Workload::Hot, 10, 1.0, 10, 3);
        for _ in 0..1000 {
            let Op::Transfer { source, destination } = p.next_op() else { panic!("hot sends transfers") };
            assert!(source == 0 || destination == 0);
            assert_ne!(source, destination);
        }
    }

    #[test]
    fn batches_have_the_asked_size() {
        let mut p = Picker::new(Workload::Batch, 10, 1.0, 37, 3);
        let Op::Batch(items) = p.next_op() else { panic!("batch sends batches") };
        assert_eq!(items.len(), 37);
    }
}
