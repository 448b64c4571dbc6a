//! Reads the inventory (hosts and VMs with about 15 properties each) like the govmomi reference in
//! testbed/govmomi-bench; run by `cargo xtask bench-soap`.
//!
//! Usage: `inventory_bench URL THUMBPRINT [ITERATIONS]`. Prints
//! `RESULT client=vsphere-soap objects=N median_ms=X min_ms=Y max_rss_kb=Z`.

use std::time::Instant;

use vsphere_soap::{Client, Credentials, Password, PropertySpec, TlsMode};

const VM_PROPS: &[&str] = &[
    "name",
    "runtime.connectionState",
    "runtime.powerState",
    "runtime.host",
    "summary.config.memorySizeMB",
    "summary.config.numCpu",
    "summary.config.vmPathName",
    "guest.ipAddress",
    "guest.toolsRunningStatus",
    "guestHeartbeatStatus",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.guestMemoryUsage",
    "datastore",
    "snapshot",
    "resourcePool",
];

const HOST_PROPS: &[&str] = &[
    "name",
    "parent",
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
    "runtime.powerState",
    "summary.hardware.numCpuCores",
    "summary.hardware.cpuMhz",
    "summary.hardware.memorySize",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.overallMemoryUsage",
    "datastore",
    "vm",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(thumbprint)) = (args.get(1), args.get(2)) else {
        return Err("usage: inventory_bench URL THUMBPRINT [ITERATIONS]".into());
    };
    let iterations: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Client::builder(url)
            .tls(TlsMode::Thumbprint(thumbprint.parse()?))
            .credentials(Credentials::new("bench", Password::new("bench")))
            .keep_alive(None)
            .connect()
            .await?;
        let mut times = Vec::new();
        let mut objects = 0;
        for i in 0..=iterations {
            // The first read warms up and is not timed.
            let start = Instant::now();
            let inv = client
                .retrieve_inventory(vec![
                    PropertySpec::new("VirtualMachine", VM_PROPS),
                    PropertySpec::new("HostSystem", HOST_PROPS),
                ])
                .await?;
            if i > 0 {
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            objects = inv.len();
        }
        client.logout().await?;
        times.sort_by(f64::total_cmp);
        println!(
            "RESULT client=vsphere-soap objects={objects} median_ms={:.1} min_ms={:.1} max_rss_kb={}",
            times[times.len() / 2],
            times[0],
            max_rss_kb()
        );
        Ok(())
    })
}

/// Peak resident set (VmHWM) in KiB.
fn max_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
