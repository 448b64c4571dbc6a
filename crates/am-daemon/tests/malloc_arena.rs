//! The daemon runs with one glibc malloc arena: it executes itself once more with
//! `MALLOC_ARENA_MAX=1` (same process), unless the variable is set, and then keeps the
//! operator's value (`docs/benchmarks.md`: 7 MB of 61 at 10,000 VMs).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `MALLOC_ARENA_MAX` in the environment of process `pid`, once it is set (`None` after 20 s),
/// with `MALLOC_MMAP_THRESHOLD_` if set then.
fn arena_max_of(pid: u32) -> Option<(String, Option<String>)> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let var = |name: &str| {
            env.split(|b| *b == 0)
                .filter_map(|kv| std::str::from_utf8(kv).ok())
                .find_map(|kv| kv.strip_prefix(name).map(str::to_owned))
        };
        if let Some(arenas) = var("MALLOC_ARENA_MAX=") {
            return Some((arenas, var("MALLOC_MMAP_THRESHOLD_=")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn the_daemon_runs_with_one_malloc_arena_unless_told_otherwise() {
    // A vCenter that never answers (the connection is made by the kernel, never accepted): the
    // daemon waits for it, long enough to be looked at.
    let vcenter = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = vcenter.local_addr().expect("its address").port();
    let dir = std::env::temp_dir().join(format!("am-arena-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("pw"), "secret\n").expect("password file");
    std::fs::write(dir.join("token"), "tok-0123456789abcdef\n").expect("token file");
    let config = dir.join("am.toml");
    std::fs::write(
        &config,
        format!(
            "journal = \"{d}/journal.db\"\n[vcenter]\nurl = \"https://127.0.0.1:{port}/sdk\"\nuser = \"u\"\npassword = {{ file = \"{d}/pw\" }}\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = \"{d}/token\" }}\n",
            d = dir.display()
        ),
    )
    .expect("config");
    // Given none: one arena and a fixed mmap threshold; given a value: the operator's, as is.
    for (given, expected, threshold) in [(None, "1", Some("131072")), (Some("4"), "4", None)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_am-daemon"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match given {
            Some(v) => cmd.env("MALLOC_ARENA_MAX", v),
            None => cmd.env_remove("MALLOC_ARENA_MAX"),
        };
        cmd.env_remove("MALLOC_MMAP_THRESHOLD_");
        let mut child = cmd.spawn().expect("am-daemon starts");
        let seen = arena_max_of(child.id());
        let running = child.try_wait().expect("its status").is_none();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            seen,
            Some((expected.to_owned(), threshold.map(str::to_owned))),
            "MALLOC_ARENA_MAX given {given:?}, and MALLOC_MMAP_THRESHOLD_"
        );
        assert!(
            running,
            "the daemon (given {given:?}) still waits for vCenter, in the same process"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
