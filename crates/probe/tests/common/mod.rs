//! Test helpers: network namespaces the tests make for themselves, and child processes.
#![allow(dead_code, clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

/// Whether `AM_ALLOW_SKIP` (comma-separated) names `what`: the only way a test may skip.
pub fn skip_allowed(what: &str) -> bool {
    std::env::var("AM_ALLOW_SKIP").is_ok_and(|v| v.split(',').any(|w| w.trim() == what))
}

/// Runs `ip` with `args`; the error carries stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace `am-probe-test-<pid>-<tag>` reached from here through a veth pair, with
/// only link-local addresses: `local` on our side, `remote` inside. Inside, there is no route back
/// (until [`TestNet::route_back`]), so nothing in it can answer. Deleted on drop, even on failure.
pub struct TestNet {
    pub ns: String,
    pub outer_if: String,
    pub inner_if: String,
    pub local: String,
    pub remote: String,
}

impl TestNet {
    /// Makes the namespace. Where namespaces are not permitted the test fails, naming the cause:
    /// `cargo xtask test` runs as root, where they are. A developer without root may opt out with
    /// `AM_ALLOW_SKIP=netns` (then `None`, with the reason printed): never in CI.
    pub fn create(tag: u8) -> Option<TestNet> {
        let pid = std::process::id();
        let ns = format!("am-probe-test-{pid}-{tag}");
        if let Err(e) = ip(&["netns", "add", &ns]) {
            if skip_allowed("netns") {
                eprintln!("SKIPPED (AM_ALLOW_SKIP=netns): cannot create a network namespace here ({e})");
                return None;
            }
            panic!(
                "cannot create a network namespace ({e}): run as root (cargo xtask test does), or set AM_ALLOW_SKIP=netns to skip these tests on a workstation"
            );
        }
        let third = pid % 250 + 1;
        let inner_if = format!("amp{pid}{tag}b");
        let net = TestNet {
            outer_if: format!("amp{pid}{tag}a"),
            inner_if: inner_if.clone(),
            local: format!("169.254.{third}.{}", 2 * u32::from(tag) + 1),
            remote: format!("169.254.{third}.{}", 2 * u32::from(tag) + 2),
            ns,
        };
        let steps: Vec<Vec<String>> = vec![
            vec![
                "link",
                "add",
                &net.outer_if,
                "type",
                "veth",
                "peer",
                "name",
                &inner_if,
                "netns",
                &net.ns,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/32", net.local),
                "dev".into(),
                net.outer_if.clone(),
            ],
            vec!["link".into(), "set".into(), net.outer_if.clone(), "up".into()],
            vec![
                "-n".into(),
                net.ns.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/32", net.remote),
                "dev".into(),
                inner_if.clone(),
            ],
            vec![
                "-n".into(),
                net.ns.clone(),
                "link".into(),
                "set".into(),
                inner_if,
                "up".into(),
            ],
            vec![
                "-n".into(),
                net.ns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "route".into(),
                "add".into(),
                format!("{}/32", net.remote),
                "dev".into(),
                net.outer_if.clone(),
                "src".into(),
                net.local.clone(),
            ],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args) {
                panic!("setting up the test namespace failed: {e}");
            }
        }
        // Never send a probe anywhere else: the route must lead into our veth.
        let route = ip(&["route", "get", &net.remote]).unwrap_or_default();
        assert!(
            route.contains(&format!("dev {}", net.outer_if)),
            "{} is not routed into the test namespace: {route}",
            net.remote
        );
        Some(net)
    }

    /// Gives the namespace a route back to `local`, so that it can answer.
    pub fn route_back(&self) {
        ip(&[
            "-n",
            &self.ns,
            "route",
            "add",
            &format!("{}/32", self.local),
            "dev",
            &self.inner_if,
        ])
        .expect("route back");
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.outer_if]);
    }
}
