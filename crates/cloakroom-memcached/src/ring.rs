//! Which server holds which key: a ketama-style consistent-hash ring.
//!
//! Each server gets [`POINTS_PER_SERVER`] points on a 32-bit circle, taken
//! from SHA-256 digests of `"<host>:<port>-<n>"` (four points per digest, as
//! ketama does with MD5). A key belongs to the first point at or after its
//! own hash, wrapping around. Because a server's points depend only on its
//! own name, every process given the same server list builds the same ring
//! whatever order the list is in, and adding or removing a server moves only
//! the keys that land on its points (about `1/n` of them), not all of them as
//! `hash % n` would.
//!
//! No ring crate is used: when this was written the candidates on crates.io
//! were either a first 0.0.1 release (`ketama`) or had not been released in
//! years (`hash_ring`, `consistent_hash_ring`), and a ring is a sorted vector
//! and a binary search. It hashes with `ring`'s SHA-256, which the core crate
//! already depends on. (It is not libmemcached-compatible, which would need
//! MD5; that would only matter if clients other than this crate had to find
//! the same keys, and nothing else reads session keys.)
//!
//! A key's own hash is the first 32 bits of its [`StoreKey`], which is itself
//! a SHA-256 digest, so it needs no second hashing.

use cloakroom_core::StoreKey;

/// Points per server: 40 digests of 4 points each, as in ketama. Enough that
/// each of a handful of servers gets its share within a few percent.
pub(crate) const POINTS_PER_SERVER: u32 = 160;

/// The ring: points sorted by position, each naming a server by index.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// Builds the ring for servers named `names` (`host:port`), in the order
    /// that [`Ring::server_for`] indexes them.
    pub(crate) fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut points = Vec::with_capacity(names.len() * POINTS_PER_SERVER as usize);
        for (server, name) in names.iter().enumerate() {
            for n in 0..POINTS_PER_SERVER / 4 {
                let label = format!("{}-{n}", name.as_ref());
                let digest = ring::digest::digest(&ring::digest::SHA256, label.as_bytes());
                for chunk in digest.as_ref()[..16].chunks_exact(4) {
                    let point = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    points.push((point, server));
                }
            }
        }
        // Sorting by server too makes ties (two servers on one point) resolve
        // the same way in every process.
        points.sort_unstable();
        Self { points }
    }

    /// The index of the server that holds `key`.
    pub(crate) fn server_for(&self, key: &StoreKey) -> usize {
        self.server_for_hash(key_hash(key))
    }

    fn server_for_hash(&self, hash: u32) -> usize {
        let at = self.points.partition_point(|&(point, _)| point < hash);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map_or(0, |&(_, server)| server)
    }
}

/// The first 32 bits of the key's SHA-256 (its first 8 hex digits).
fn key_hash(key: &StoreKey) -> u32 {
    let [a, b, c, d, ..] = key.digest();
    u32::from_be_bytes([a, b, c, d])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use cloakroom_core::Id;

    fn keys(n: usize) -> Vec<StoreKey> {
        (0..n)
            .map(|_| Id::generate().unwrap().store_key())
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:11211")).collect()
    }

    #[test]
    fn one_server_gets_everything() {
        let ring = Ring::new(&["127.0.0.1:11211"]);
        assert!(keys(200).iter().all(|k| ring.server_for(k) == 0));
    }

    #[test]
    fn keys_spread_evenly() {
        let ring = Ring::new(&names(3));
        let mut counts = [0usize; 3];
        for k in keys(30_000) {
            counts[ring.server_for(&k)] += 1;
        }
        for c in counts {
            // A third is 10_000; 160 points keep each share well within this.
            assert!((7_000..13_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_server_moves_only_its_share() {
        let before = Ring::new(&names(3));
        let after = Ring::new(&names(4));
        let all = keys(20_000);
        let mut moved = 0;
        for k in &all {
            let (b, a) = (before.server_for(k), after.server_for(k));
            if a != b {
                // Keys only ever move to the new server.
                assert_eq!(a, 3);
                moved += 1;
            }
        }
        // About a quarter should move; `hash % n` would move three quarters.
        assert!((3_000..7_000).contains(&moved), "{moved} moved");
    }

    #[test]
    fn the_ring_does_not_depend_on_list_order() {
        let ab = Ring::new(&["a:1", "b:2"]);
        let ba = Ring::new(&["b:2", "a:1"]);
        for k in keys(2_000) {
            assert_eq!(ab.server_for(&k), 1 - ba.server_for(&k));
        }
    }

    #[test]
    fn hashes_past_the_last_point_wrap_around() {
        let ring = Ring::new(&names(2));
        let first = ring.points[0].1;
        assert_eq!(ring.server_for_hash(u32::MAX), first);
        assert_eq!(ring.server_for_hash(0), first);
    }
}
