//! From the configuration to what the libraries take: the vCenter adapter's options (scope,
//! targets, priorities, attributes, capacity, spares with their passwords read, hooks), the
//! supervisor's settings as `run` completes them, and the ICMP check.

use crate::config::{ConfigError, DaemonConfig, HookConfig};
use am_vsphere::vsphere_soap::Password;
use am_vsphere::{GuestAddress, Hook, HostAddress, Options, SpareHost};

/// The adapter's options from the configuration; spare hosts' passwords are read here (errors
/// name the key).
pub fn vsphere_options(cfg: &DaemonConfig) -> Result<Options, ConfigError> {
    let vc = cfg.vcenter.clone().unwrap_or_default();
    let mut spares = std::collections::BTreeMap::new();
    for (name, s) in &cfg.spares {
        let password = s.password.read(&format!("spares.{name}.password"))?;
        spares.insert(
            name.clone(),
            SpareHost {
                address: s.address.clone(),
                port: s.port,
                user: s.user.clone(),
                password: Password::new(password.expose()),
                thumbprint: s.thumbprint.clone(),
                cluster: s.cluster.clone(),
            },
        );
    }
    let hook = |h: &Option<HookConfig>| {
        h.as_ref().map(|h| Hook {
            command: h.command.clone(),
            timeout: h.timeout,
        })
    };
    Ok(Options {
        datacenter: vc.datacenter.clone(),
        clusters: vc.clusters.clone(),
        spares,
        revive_hook: hook(&cfg.hooks.revive),
        fence_hook: hook(&cfg.hooks.fence),
        targets: cfg.targets.clone(),
        priorities: cfg.priorities.clone(),
        attributes: cfg.attributes.clone(),
        capacity: cfg.capacity.clone(),
        task_timeout: vc.task_timeout,
        lock_fresh: vc.lock_fresh,
        update_wait_timeout: vc.update_wait_timeout,
    })
}

/// The supervisor's settings as `run` uses them: the manager's user is the vCenter session's;
/// revival and fencing are tried only where a hook or an out-of-band controller (`out_of_band`:
/// a BMC or an admin vCenter VM for some host) can do them; the spares are those of the
/// `[spares]` section unless `supervisor.spares` names some.
///
/// The capabilities are global, not per host: with a BMC for some hosts and no hook, a fence
/// of a host without one fails (`FenceFailed`), and nothing of that host is restarted.
pub fn supervisor_config(
    cfg: &DaemonConfig,
    opts: &Options,
    session_user: &str,
    out_of_band: bool,
) -> supervisor::Config {
    let mut s = cfg.supervisor.clone();
    if s.manager_user != session_user {
        tracing::info!(
            configured = %s.manager_user,
            session = %session_user,
            "the manager's user is the vCenter session's"
        );
        s.manager_user = session_user.to_owned();
    }
    s.capabilities = supervisor::Capabilities {
        revive: opts.revive_hook.is_some() || out_of_band,
        fence: opts.fence_hook.is_some() || out_of_band,
    };
    if s.spares.is_empty() {
        s.spares = opts.spares.keys().cloned().collect();
    }
    s
}

/// The configuration keys that ask for ICMP probes, if any.
pub fn icmp_wanted(cfg: &DaemonConfig, opts: &Options) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if opts.targets.hosts.address != HostAddress::None && opts.targets.hosts.port == 0 {
        keys.push("targets.hosts.port = 0");
    }
    if opts
        .targets
        .hosts
        .addresses
        .values()
        .any(|a| matches!(probe::parse_probe_addr(a, None), Ok(probe::ProbeAddr::Icmp(_))))
    {
        keys.push("targets.hosts.addresses");
    }
    if opts.targets.guests.address != GuestAddress::None && opts.targets.guests.port == 0 {
        keys.push("targets.guests.port = 0");
    }
    if cfg
        .isolation_addresses
        .iter()
        .any(|a| matches!(probe::parse_probe_addr(a, None), Ok(probe::ProbeAddr::Icmp(_))))
    {
        keys.push("isolation_addresses");
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_becomes_the_adapters_options() {
        let text = r#"
            [vcenter]
            url = "https://vc/sdk"
            user = "am"
            datacenter = "DC0"
            clusters = ["C0", "C1"]
            [targets.hosts]
            port = 902
            [targets.guests]
            port = 22
            exclude_vms = ["lab-*"]
            [[priorities.rules]]
            folder = "prod"
            priority = "high"
            [capacity]
            memory = "configured"
            memory_overcommit = 1.5
            [hooks.fence]
            command = ["/usr/local/bin/fence", "{host}"]
            timeout = "30s"
        "#;
        let cfg = DaemonConfig::from_toml(text).unwrap();
        let opts = vsphere_options(&cfg).unwrap();
        assert_eq!(opts.datacenter.as_deref(), Some("DC0"));
        assert_eq!(opts.clusters, ["C0", "C1"]);
        assert_eq!(opts.targets.hosts.port, 902);
        assert_eq!(opts.targets.guests.exclude_vms, ["lab-*"]);
        assert_eq!(opts.priorities.rules.len(), 1);
        assert_eq!(opts.capacity.memory, am_vsphere::MemoryModel::Configured);
        assert_eq!(opts.fence_hook.as_ref().map(|h| h.timeout.as_secs()), Some(30));
        assert!(opts.revive_hook.is_none());
        let s = supervisor_config(&cfg, &opts, "VSPHERE.LOCAL\\am", false);
        assert_eq!(s.manager_user, "VSPHERE.LOCAL\\am");
        assert!(s.capabilities.fence && !s.capabilities.revive);
        assert!(icmp_wanted(&cfg, &opts).is_empty(), "both probe by TCP");
    }

    #[test]
    fn spares_passwords_are_read_and_named_when_missing() {
        let text = r#"
            [spares.spare-1]
            address = "10.0.0.50"
            user = "root"
            password = { env = "AM_TEST_SPARE_PASSWORD_SURELY_UNSET" }
        "#;
        let cfg = DaemonConfig::from_toml(text).unwrap();
        let e = vsphere_options(&cfg).unwrap_err().to_string();
        assert!(e.contains("spares.spare-1.password"), "{e}");
        let dir = std::env::temp_dir().join(format!("am-spare-pw-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let text = format!(
            "[spares.spare-1]\naddress = \"10.0.0.50\"\nuser = \"root\"\npassword = {{ file = \"{}\" }}\n",
            dir.display()
        );
        let cfg = DaemonConfig::from_toml(&text).unwrap();
        let opts = vsphere_options(&cfg).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(opts.spares["spare-1"].password.expose(), "s3cret");
        assert!(
            !format!("{:?}", opts.spares["spare-1"]).contains("s3cret"),
            "never printed"
        );
        let s = supervisor_config(&cfg, &opts, "am", false);
        assert_eq!(s.spares, ["spare-1"]);
    }
}
