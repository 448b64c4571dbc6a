//! Plan quality on random instances: VMs placed by the planner, by plain first-fit decreasing,
//! and a simple upper bound (free capacity added up, smallest VMs first).
//!
//! `cargo bench -p planner --bench quality`

use planner::baseline::{first_fit_decreasing, upper_bound};
use planner::synth::{self, Params};
use planner::{FailoverPlans, Policy};
use std::collections::BTreeSet;

fn main() {
    println!(
        "| fill | instances | failures | placed (planner) | placed (FFD) | upper bound | planner/bound | FFD/bound | planner < FFD |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for fill in [85u64, 92, 96, 100] {
        let (mut ours, mut ffd, mut bound, mut failures, mut worse) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        let instances = 20;
        for seed in 0..instances {
            let p = Params {
                hosts: 24,
                vms: 3_000,
                hosts_per_domain: 4,
                fill_pct: fill,
                ..Params::default()
            };
            let (inv, cons) = synth::cluster(&p, seed);
            let policy = Policy::default();
            let Ok(plans) = FailoverPlans::new(&inv, &cons, &policy) else {
                continue;
            };
            let mut cases: Vec<(BTreeSet<_>, &planner::Plan)> = plans
                .host_plans()
                .map(|(h, plan)| (BTreeSet::from([h.clone()]), plan))
                .collect();
            for (d, plan) in plans.domain_plans() {
                let hosts = inv
                    .hosts
                    .values()
                    .filter(|h| h.failure_domain.as_deref() == Some(d));
                cases.push((hosts.map(|h| h.id.clone()).collect(), plan));
            }
            for (failed, plan) in cases {
                let f = first_fit_decreasing(&inv, &cons, &failed, &policy);
                failures += 1;
                ours += plan.placements.len();
                ffd += f.placements.len();
                bound += upper_bound(&inv, &failed, &policy);
                worse += usize::from(plan.placements.len() < f.placements.len());
            }
        }
        let pct = |x: usize| 100.0 * x as f64 / bound.max(1) as f64;
        println!(
            "| {fill}% | {instances} | {failures} | {ours} | {ffd} | {bound} | {:.2}% | {:.2}% | {worse} |",
            pct(ours),
            pct(ffd)
        );
    }
}
