//! Out-of-band hooks (`revive_host`, `fence_host`): a command run without a shell, with a
//! timeout, its placeholders filled in.

use std::process::Stdio;

use am_core::HvError;

use crate::options::Hook;

/// Replaces `{name}` by its value in `arg`, for every `(name, value)`.
pub(crate) fn fill(arg: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(arg.to_owned(), |a, (k, v)| a.replace(&format!("{{{k}}}"), v))
}

/// Runs `hook` for operation `op`. Exit status 0: done. A non-zero exit is a retryable
/// `HookFailed` fault with the end of its standard error; a hook still running after its timeout
/// is killed and the call times out.
pub(crate) async fn run(hook: &Hook, op: &'static str, vars: &[(&str, &str)]) -> Result<(), HvError> {
    let args: Vec<String> = hook.command.iter().map(|a| fill(a, vars)).collect();
    let Some((program, rest)) = args.split_first() else {
        return Err(HvError::NotSupported {
            op: format!("{op}: the hook has an empty command"),
        });
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tracing::info!(op, command = ?args, "running hook");
    let out = match tokio::time::timeout(hook.timeout, cmd.output()).await {
        Err(_) => {
            tracing::warn!(op, command = ?args, "hook timed out; killed");
            return Err(HvError::Timeout { op: op.to_owned() });
        }
        Ok(Err(e)) => {
            return Err(HvError::Api {
                fault: "HookFailed".into(),
                message: format!("{op}: cannot run {program}: {e}"),
                retryable: false,
            });
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(HvError::Api {
        fault: "HookFailed".into(),
        message: format!("{op}: {program} exited with {}: {tail}", out.status),
        retryable: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn placeholders_are_filled() {
        let vars = [("host", "esx-1"), ("host_id", "host-7"), ("address", "")];
        assert_eq!(fill("--host={host}/{host_id}", &vars), "--host=esx-1/host-7");
        assert_eq!(fill("{address}", &vars), "");
        assert_eq!(fill("{other}", &vars), "{other}");
    }

    #[tokio::test]
    async fn exit_status_and_timeout_decide() {
        let vars = [("host", "esx-1")];
        let ok = Hook::new(&["sh", "-c", "test {host} = esx-1"], Duration::from_secs(10));
        run(&ok, "fence_host", &vars).await.unwrap();
        let fail = Hook::new(
            &["sh", "-c", "echo no power >&2; exit 3"],
            Duration::from_secs(10),
        );
        let e = run(&fail, "fence_host", &vars).await.unwrap_err();
        assert!(
            matches!(&e, HvError::Api { fault, message, retryable: true } if fault == "HookFailed" && message.contains("no power")),
            "{e:?}"
        );
        let slow = Hook::new(&["sleep", "5"], Duration::from_millis(100));
        let e = run(&slow, "revive_host", &vars).await.unwrap_err();
        assert_eq!(
            e,
            HvError::Timeout {
                op: "revive_host".into()
            }
        );
        let missing = Hook::new(&["/nonexistent/am-hook"], Duration::from_secs(1));
        assert!(matches!(
            run(&missing, "revive_host", &vars).await.unwrap_err(),
            HvError::Api { retryable: false, .. }
        ));
        let empty = Hook::new(&[], Duration::from_secs(1));
        assert!(matches!(
            run(&empty, "revive_host", &vars).await.unwrap_err(),
            HvError::NotSupported { .. }
        ));
    }
}
