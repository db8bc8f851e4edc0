//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): a lookup table of a
//! prime size M in which every backend owns about M/N slots, and a backend change moves only
//! the slots it must. Computed here; the kernel only indexes the table with a flow hash.

use skiff_ebpf_common::MAGLEV_DEFAULT_SIZE;

/// Table sizes: primes, so every `skip` is coprime to M and each permutation covers all slots.
const SIZES: [u32; 4] = [MAGLEV_DEFAULT_SIZE, 32_749, 65_521, 131_071];

/// The table size for `backends` backends: at least 100 slots per backend (which keeps the
/// flows moved by a backend change within about 1% of the ideal), never below the default,
/// so a service's size, and with it every flow's slot, stays put while it has up to 163.
#[must_use]
pub fn table_size(backends: usize) -> u32 {
    let wanted = u64::try_from(backends)
        .unwrap_or(u64::MAX)
        .saturating_mul(100);
    SIZES
        .into_iter()
        .find(|&m| u64::from(m) >= wanted)
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Fills a table of size `m` (a prime) from backends named by stable identities (their
/// address, so every node computes the same table). Entry `i` is an index into `backends`.
/// Empty when there are no backends. (The table writer always goes through [`rebalance`], with
/// the live table as the start; this is its from-scratch case, which the tests pin down.)
#[cfg(test)]
#[must_use]
pub fn table(backends: &[String], m: u32) -> Vec<u32> {
    rebalance(&vec![None; m as usize], backends, m)
}

/// Updates a table for a new backend set while moving as few slots as possible. `kept[s]` is
/// the index in `backends` of slot `s`'s current owner, or `None` when the slot is new or its
/// owner is gone. Slots of backends that remain stay theirs unless that backend holds more
/// than its share, in which case it gives up the slots it prefers least; free slots go, in
/// Maglev's round-robin, to each backend's most preferred free slot until every backend holds
/// its share (M/N, the remainder to the first names in sorted order).
///
/// So removing one of N backends moves exactly its own slots (1/N of the flows) and nothing
/// else, and adding one moves just the slots it takes. Starting from an empty table this is
/// Maglev's populate step with exact shares.
#[must_use]
pub fn rebalance(kept: &[Option<usize>], backends: &[String], m: u32) -> Vec<u32> {
    let n = backends.len();
    if n == 0 || m < 2 || kept.len() != m as usize {
        return Vec::new();
    }
    let m64 = u64::from(m);
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|name| {
            let offset = fnv1a(name.as_bytes(), 0xcbf2_9ce4_8422_2325) % m64;
            let skip = fnv1a(name.as_bytes(), 0x6c62_272e_07bb_0142) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| backends[a].cmp(&backends[b]));
    let mut quota = vec![m as usize / n; n];
    for &i in order.iter().take(m as usize % n) {
        quota[i] += 1;
    }

    let mut entry: Vec<u32> = kept
        .iter()
        .map(|k| k.filter(|&i| i < n).map_or(u32::MAX, |i| i as u32))
        .collect();
    let mut held = vec![0_usize; n];
    for &owner in &entry {
        if owner != u32::MAX {
            held[owner as usize] += 1;
        }
    }
    // Over-quota backends (there are some when a backend was added) give up the slots that
    // come last in their own preference order.
    for i in 0..n {
        if held[i] <= quota[i] {
            continue;
        }
        let (offset, skip) = perms[i];
        let inverse = pow_mod(skip, m64 - 2, m64);
        let mut owned: Vec<(u64, usize)> = entry
            .iter()
            .enumerate()
            .filter(|&(_, &owner)| owner == i as u32)
            .map(|(slot, _)| {
                let rank = (slot as u64 + m64 - offset) % m64 * inverse % m64;
                (rank, slot)
            })
            .collect();
        owned.sort_unstable();
        for &(_, slot) in &owned[quota[i]..] {
            entry[slot] = u32::MAX;
        }
        held[i] = quota[i];
    }

    let mut free = entry.iter().filter(|&&e| e == u32::MAX).count();
    let mut next = vec![0_u64; n];
    while free > 0 {
        for i in 0..n {
            if held[i] >= quota[i] || free == 0 {
                continue;
            }
            let (offset, skip) = perms[i];
            let slot = loop {
                let c = ((offset + next[i] * skip) % m64) as usize;
                next[i] += 1;
                if entry[c] == u32::MAX {
                    break c;
                }
            };
            entry[slot] = i as u32;
            held[i] += 1;
            free -= 1;
        }
    }
    entry
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut result = 1;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    result
}

/// FNV-1a with a caller-chosen basis: stable across builds and machines, unlike std's hasher.
fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.244.{}.{}:8080", i / 250, i % 250 + 2))
            .collect()
    }

    #[test]
    fn sizes_are_at_least_100_per_backend_and_stable_for_small_sets() {
        assert_eq!(table_size(0), MAGLEV_DEFAULT_SIZE);
        assert_eq!(table_size(163), MAGLEV_DEFAULT_SIZE);
        assert_eq!(table_size(164), 32_749);
        assert_eq!(table_size(600), 65_521);
        for n in [1, 10, 163, 300, 1000] {
            assert!(u64::from(table_size(n)) >= 100 * n as u64, "{n}");
        }
    }

    #[test]
    fn every_slot_is_filled_and_shares_are_even() {
        let backends = names(10);
        let m = table_size(backends.len());
        let t = table(&backends, m);
        assert_eq!(t.len(), m as usize);
        let mut counts = [0_u32; 10];
        for &i in &t {
            counts[i as usize] += 1;
        }
        let ideal = m / 10;
        for c in counts {
            assert!(
                c.abs_diff(ideal) <= ideal / 50,
                "share {c} vs ideal {ideal}"
            );
        }
    }

    /// `kept` for a table computed for `before`, now serving `after`.
    fn carry(table: &[u32], before: &[String], after: &[String]) -> Vec<Option<usize>> {
        table
            .iter()
            .map(|&i| after.iter().position(|a| *a == before[i as usize]))
            .collect()
    }

    #[test]
    fn removing_one_of_n_moves_only_its_slots_and_exactly_one_nth() {
        for n in [5_usize, 10, 50] {
            let before_names = names(n);
            let m = table_size(n);
            let before = table(&before_names, m);
            let removed = n / 2;
            let mut after_names = before_names.clone();
            after_names.remove(removed);
            let after = rebalance(
                &carry(&before, &before_names, &after_names),
                &after_names,
                m,
            );
            let mut moved = 0;
            for slot in 0..m as usize {
                let old = &before_names[before[slot] as usize];
                let new = &after_names[after[slot] as usize];
                if old != new {
                    moved += 1;
                    assert_eq!(
                        *old, before_names[removed],
                        "n={n}: slot {slot} moved from {old}, which was not removed"
                    );
                }
            }
            let share = f64::from(moved) / f64::from(m);
            let ideal = 1.0 / n as f64;
            assert!(
                (share - ideal).abs() < 0.001,
                "n={n}: moved {share}, ideal {ideal}"
            );
        }
    }

    #[test]
    fn adding_a_backend_moves_only_the_slots_it_takes() {
        let before_names = names(9);
        let m = table_size(10);
        let before = table(&before_names, m);
        let mut after_names = before_names.clone();
        after_names.push("10.244.9.9:8080".into());
        let after = rebalance(
            &carry(&before, &before_names, &after_names),
            &after_names,
            m,
        );
        let moved: Vec<usize> = (0..m as usize)
            .filter(|&s| before_names[before[s] as usize] != after_names[after[s] as usize])
            .collect();
        assert!(
            moved.iter().all(|&s| after[s] == 9),
            "only the new backend gains slots"
        );
        let share = moved.len() as f64 / f64::from(m);
        assert!((share - 0.1).abs() < 0.001, "moved {share}, ideal 1/10");
    }

    #[test]
    fn shares_are_exact_after_any_change() {
        let mut current = names(7);
        let m = table_size(7);
        let mut t = table(&current, m);
        for step in 0..6 {
            let next: Vec<String> = if step % 2 == 0 {
                current
                    .iter()
                    .skip(1)
                    .cloned()
                    .chain([format!("10.1.{step}.1:80")])
                    .collect()
            } else {
                current.iter().skip(2).cloned().collect()
            };
            t = rebalance(&carry(&t, &current, &next), &next, m);
            current = next;
            let mut counts = vec![0_u32; current.len()];
            for &i in &t {
                counts[i as usize] += 1;
            }
            let base = m / current.len() as u32;
            assert!(
                counts.iter().all(|&c| c == base || c == base + 1),
                "{counts:?}"
            );
        }
    }

    #[test]
    fn tables_are_deterministic_and_empty_without_backends() {
        let b = names(3);
        assert_eq!(table(&b, 251), table(&b, 251));
        assert!(table(&[], 251).is_empty());
    }
}
