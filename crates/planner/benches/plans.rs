//! Plans for every failure of a 1,000-host, 50,000-VM cluster, and updates after one change.
//!
//! `cargo bench -p planner --bench plans -- --warm-up-time 1 --measurement-time 3 --sample-size 10`
#![allow(missing_docs)] // criterion_group! defines an undocumented function.
#![allow(clippy::expect_used)] // benchmark code

use am_core::InventoryDelta;
use criterion::{Criterion, criterion_group, criterion_main};
use planner::synth::{self, Params, Rng, vm_change};
use planner::{FailoverPlans, Policy, Updated};
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let policy = Policy::default();
    let (inv, cons) = synth::cluster(&Params::default(), 1);
    let (flat, flat_cons) = synth::cluster(
        &Params {
            hosts_per_domain: 0,
            ..Params::default()
        },
        1,
    );
    let mut g = c.benchmark_group("plans");
    g.sample_size(10);
    g.bench_function("all single-host plans, 1000 hosts 50000 VMs", |b| {
        b.iter(|| FailoverPlans::new(&flat, &flat_cons, &policy))
    });
    g.bench_function("all host and rack plans, 1000 hosts 50000 VMs 50 racks", |b| {
        b.iter(|| FailoverPlans::new(&inv, &cons, &policy))
    });
    let mut plans = planner::synth::Tracked::new(&inv, &cons, &policy).expect("valid");
    let mut rng = Rng::new(7);
    let mut n = 0usize;
    let mut stats = Updated::default();
    g.bench_function("update after one VM change (host and rack plans)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let (change, undo) = vm_change(plans.inventory(), &mut rng, n);
                let t = Instant::now();
                stats += plans.apply(&change);
                total += t.elapsed();
                plans.apply(&undo);
            }
            total
        })
    });
    eprintln!("per VM change: {stats:?}");
    let mut stats = Updated::default();
    g.bench_function("update after a host fails", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let hosts: Vec<_> = plans.inventory().hosts.values().collect();
                let up = hosts[rng.below(hosts.len() as u64) as usize].clone();
                let mut down = up.clone();
                down.connection = am_core::ConnectionState::NotResponding;
                let t = Instant::now();
                stats += plans.apply(&InventoryDelta::HostUpsert(down));
                total += t.elapsed();
                plans.apply(&InventoryDelta::HostUpsert(up));
            }
            total
        })
    });
    eprintln!("per host failure: {stats:?}");
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
