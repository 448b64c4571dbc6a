//! CPU time (not wall time) of building all plans and of updates after one VM change: the
//! figures that matter on a shared machine. Linux only (reads /proc/self/stat).
//!
//! `cargo bench -p planner --bench cpu`
#![allow(clippy::expect_used, clippy::unwrap_used)] // benchmark code
use planner::synth::{self, Params, Rng, vm_change};
use planner::{FailoverPlans, Policy};
use std::time::{Duration, Instant};
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let policy = Policy::default();
    let (inv, cons) = synth::cluster(&Params::default(), 1);
    let (c0, t0) = (cpu(), Instant::now());
    let mut plans = planner::synth::Tracked::new(&inv, &cons, &policy).expect("valid");
    let build_cpu = cpu() - c0;
    eprintln!("build all: wall {:?} cpu {:.3}s", t0.elapsed(), build_cpu);
    let (flat, fc) = synth::cluster(
        &Params {
            hosts_per_domain: 0,
            ..Params::default()
        },
        1,
    );
    let (c0, t0) = (cpu(), Instant::now());
    let _p = FailoverPlans::new(&flat, &fc, &policy).expect("valid");
    eprintln!("build single: wall {:?} cpu {:.3}s", t0.elapsed(), cpu() - c0);
    let mut rng = Rng::new(7);
    let mut by = [Duration::ZERO; 4];
    let mut worst = [Duration::ZERO; 4];
    let n = 2000;
    let mut cpu_fwd = 0.0;
    for i in 0..n {
        let (c, u) = vm_change(plans.inventory(), &mut rng, i);
        let c0 = cpu();
        let t = Instant::now();
        plans.apply(&c);
        let e = t.elapsed();
        cpu_fwd += cpu() - c0;
        by[i % 4] += e;
        worst[i % 4] = worst[i % 4].max(e);
        plans.apply(&u);
    }
    for k in 0..4 {
        let kind = ["resize", "move", "add", "remove"][k];
        eprintln!(
            "{kind}: avg wall {:?} worst {:?}",
            by[k] / (n as u32 / 4),
            worst[k]
        );
    }
    eprintln!(
        "avg wall {:?}, avg cpu {:.3} ms, {:.2}% of building all plans",
        by.iter().sum::<Duration>() / n as u32,
        cpu_fwd * 1000.0 / n as f64,
        cpu_fwd * 100.0 / n as f64 / build_cpu
    );
}
