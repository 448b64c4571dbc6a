//! Prints where a generated cluster puts its VMs, for writing scenarios:
//! `cargo run -p am-daemon --example show_cluster -- HOSTS VMS SPARES SEED`.
fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [h, v, s, seed] = args[..] else {
        eprintln!("usage: show_cluster HOSTS VMS SPARES SEED");
        std::process::exit(2);
    };
    let spec = sim::ClusterSpec::generate(h as usize, v as usize, s as usize, seed);
    for host in &spec.hosts {
        let vms: Vec<String> = spec
            .vms
            .iter()
            .filter(|vm| vm.host == host.id)
            .map(|vm| format!("{}({:?},{}MiB)", vm.id, vm.priority, vm.mem_mib))
            .collect();
        println!("{} {}MiB: {}", host.id, host.mem_mib, vms.join(" "));
    }
    for (n, sp) in &spec.spares {
        println!("spare {n} {}MiB", sp.mem_mib);
    }
}
