//! Retries as a decorator around a [`Hypervisor`], after govmomi's `vim25/retry.go`: the
//! decorator asks a policy, for each failed attempt, whether to try again and after how long.
//!
//! # Idempotency
//!
//! Retrying is only safe when doing the call twice does no harm. Errors fall in two groups:
//!
//! * **Rejected**: the backend refused the call, so it had no effect: [`HvError::Busy`], a
//!   retryable [`HvError::Api`] fault, and every non-retryable error. Any operation may be retried
//!   after those (if the policy says so).
//! * **Ambiguous**: [`HvError::Timeout`] and [`HvError::Unreachable`] (a connection can drop in
//!   the middle of a call). The first attempt may have taken effect, or may still be running on
//!   the server.
//!
//! After an ambiguous failure the decorator retries only [`Repeat::Convergent`] operations,
//! those whose second run leaves the same end state as the first: power on/off, fence, maintenance
//! mode, reconnect, remove/unregister, register, migrate and failover. When the retry of such an
//! operation then fails because the first attempt did succeed, that error means "already done" and
//! the call counts as a success:
//!
//! | operation | error on the retry | meaning |
//! |---|---|---|
//! | `power_on`, `power_off`, `fence_host`, `enter/exit_maintenance`, `reconnect_host` | `InvalidState` | already in the wanted state |
//! | `failover` | `InvalidState` | already powered on where it is registered (the first attempt registered it there and powered it on) |
//! | `unregister_vm`, `remove_snapshot`, `remove_host` | `NotFound` | already gone |
//!
//! The same errors on a *first* attempt are returned as they are: then the object was in that
//! state before we acted, which the supervisor must hear about.
//!
//! [`Repeat::Once`] operations are never retried after an ambiguous failure; the error is returned
//! and the supervisor reconciles with the inventory:
//! * `clone_vm`, `create_snapshot`, `add_host` create something: a blind retry can make a
//!   second clone, snapshot or host, and the first one's id would be lost anyway. If the first
//!   attempt succeeded, the new object shows up in the inventory feed.
//! * `reset`, `revert_snapshot`, `revive_host`, `restore_clone` are disruptive: a second reset
//!   or host power cycle hits a guest or host that is already booting again, and a second revert
//!   throws away what the VM did since the first.

use am_core::{Action, ActionOutcome, HvError, Hypervisor};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Decides whether a failed attempt is tried again, and after how long.
///
/// `attempt` is the number of the attempt that just failed: 1 for the first call. Returning
/// `None` gives up and returns `error`. Any `Fn(&HvError, u32) -> Option<Duration>` is a policy.
pub trait RetryPolicy: Send + Sync {
    /// `Some(delay)` to try again after `delay`, `None` to give up.
    fn retry_after(&self, error: &HvError, attempt: u32) -> Option<Duration>;
}

impl<F> RetryPolicy for F
where
    F: Fn(&HvError, u32) -> Option<Duration> + Send + Sync,
{
    fn retry_after(&self, error: &HvError, attempt: u32) -> Option<Duration> {
        self(error, attempt)
    }
}

/// The default policy: retryable errors ([`HvError::is_retryable`]) are retried up to
/// `max_retries` times, after `base`, `2 * base`, `4 * base`, ... (at most `max_delay`), each
/// lengthened by a deterministic jitter of up to `jitter` (a fraction) of itself.
///
/// The jitter is a hash of the error text and the attempt number: calls failing for different
/// objects (whose errors name them) spread their retries out, and a run is reproducible.
///
/// ```
/// use am_core::HvError;
/// use executor::{ExponentialBackoff, RetryPolicy};
/// use std::time::Duration;
///
/// let p = ExponentialBackoff { jitter: 0.0, ..ExponentialBackoff::default() };
/// let busy = HvError::Busy { id: "vm-1".into(), detail: "task running".into() };
/// assert_eq!(p.retry_after(&busy, 1), Some(Duration::from_secs(1)));
/// assert_eq!(p.retry_after(&busy, 3), Some(Duration::from_secs(4)));
/// assert_eq!(p.retry_after(&busy, 4), None);
/// assert_eq!(p.retry_after(&HvError::not_found("vm", "vm-1"), 1), None);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialBackoff {
    /// Retries after the first attempt (so at most `max_retries + 1` calls).
    pub max_retries: u32,
    /// Delay before the first retry.
    pub base: Duration,
    /// Upper bound of a delay before jitter.
    pub max_delay: Duration,
    /// Up to this fraction of the delay is added (0.0: none).
    pub jitter: f64,
}

impl Default for ExponentialBackoff {
    /// 3 retries after 1 s, 2 s and 4 s (each up to 20 % longer), delays capped at 1 min.
    fn default() -> Self {
        ExponentialBackoff {
            max_retries: 3,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl ExponentialBackoff {
    /// The delay before retry number `attempt` (1-based), jitter included, whatever the error.
    pub fn delay(&self, error: &HvError, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let delay = self.base.saturating_mul(1u32 << exp).min(self.max_delay);
        if self.jitter <= 0.0 {
            return delay;
        }
        let mut h = Fnv::default();
        h.write(error.to_string().as_bytes());
        h.write(&attempt.to_le_bytes());
        // Top 53 bits: a uniform fraction in [0, 1).
        let unit = (h.0 >> 11) as f64 / (1u64 << 53) as f64;
        let jittered = delay + delay.mul_f64(self.jitter.min(1.0) * unit);
        // Whole milliseconds, the resolution of tokio's timer.
        Duration::from_millis(u64::try_from(jittered.as_millis()).unwrap_or(u64::MAX))
    }
}

impl RetryPolicy for ExponentialBackoff {
    fn retry_after(&self, error: &HvError, attempt: u32) -> Option<Duration> {
        (error.is_retryable() && attempt <= self.max_retries).then(|| self.delay(error, attempt))
    }
}

/// FNV-1a: small and stable across Rust versions (unlike `DefaultHasher`).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Whether an operation may run again after an ambiguous failure (see the [module
/// docs](self)).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Running it twice ends in the same state as once: retried after timeouts too.
    Convergent,
    /// Creates something or disrupts a guest or host: retried only after errors that prove the
    /// first attempt had no effect.
    Once,
}

impl Repeat {
    /// How `action` is retried.
    pub fn of(action: &Action) -> Repeat {
        match action {
            Action::Clone { .. }
            | Action::CreateSnapshot { .. }
            | Action::AddHost { .. }
            | Action::Reset { .. }
            | Action::RevertSnapshot { .. }
            | Action::ReviveHost { .. }
            | Action::RestoreClone { .. } => Repeat::Once,
            _ => Repeat::Convergent,
        }
    }
}

/// Whether `error` leaves open that the call took effect (or still runs).
pub fn is_ambiguous(error: &HvError) -> bool {
    matches!(error, HvError::Timeout { .. } | HvError::Unreachable { .. })
}

/// On the retry of `action` after an ambiguous failure, whether `error` means the first attempt
/// did it: already in the wanted state, or already gone.
fn already_done(action: &Action, error: &HvError) -> bool {
    match action {
        Action::PowerOn { .. }
        | Action::PowerOff { .. }
        | Action::FenceHost { .. }
        | Action::EnterMaintenance { .. }
        | Action::ExitMaintenance { .. }
        | Action::ReconnectHost { .. }
        | Action::Relocate { .. }
        | Action::Failover { .. } => matches!(error, HvError::InvalidState { .. }),
        Action::Unregister { .. }
        | Action::RemoveSnapshot { .. }
        | Action::RemoveHost { .. }
        | Action::DeleteBackup { .. } => {
            matches!(error, HvError::NotFound { .. })
        }
        _ => false,
    }
}

/// A [`Hypervisor`] that retries the calls of another one according to a [`RetryPolicy`], taking
/// each operation's idempotency into account (see the [module docs](self)).
///
/// ```
/// use am_core::Hypervisor;
/// use executor::{ExponentialBackoff, Retrying};
/// use std::sync::Arc;
///
/// fn wrap(backend: Arc<dyn Hypervisor>) -> Arc<dyn Hypervisor> {
///     Arc::new(Retrying::with_policy(backend, ExponentialBackoff::default()))
/// }
/// ```
pub struct Retrying<H: ?Sized, P = ExponentialBackoff> {
    inner: Arc<H>,
    policy: P,
}

impl<H: Hypervisor + ?Sized> Retrying<H> {
    /// Wraps `inner` with the default policy ([`ExponentialBackoff::default`]).
    pub fn new(inner: Arc<H>) -> Self {
        Retrying::with_policy(inner, ExponentialBackoff::default())
    }
}

impl<H: Hypervisor + ?Sized, P: RetryPolicy> Retrying<H, P> {
    /// Wraps `inner` with `policy`.
    pub fn with_policy(inner: Arc<H>, policy: P) -> Self {
        Retrying { inner, policy }
    }

    /// The wrapped hypervisor.
    pub fn inner(&self) -> &Arc<H> {
        &self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

#[async_trait]
impl<H, P> Hypervisor for Retrying<H, P>
where
    H: Hypervisor + ?Sized,
    P: RetryPolicy,
{
    async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError> {
        let op = action.name();
        let repeat = Repeat::of(action);
        let mut attempt: u32 = 1;
        let mut ambiguous_before = false;
        loop {
            let err = match self.inner.execute(action).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if ambiguous_before && already_done(action, &err) {
                tracing::info!(
                    op,
                    attempt,
                    error = %err,
                    "retry after an ambiguous failure finds the operation already done"
                );
                return Ok(ActionOutcome::Done);
            }
            if repeat == Repeat::Once && is_ambiguous(&err) {
                tracing::warn!(
                    op,
                    attempt,
                    error = %err,
                    "not retried: the failed attempt may have taken effect"
                );
                return Err(err);
            }
            let Some(delay) = self.policy.retry_after(&err, attempt) else {
                if attempt > 1 {
                    tracing::warn!(op, attempt, error = %err, "giving up");
                }
                return Err(err);
            };
            tracing::info!(
                op,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %err,
                "retrying"
            );
            ambiguous_before |= is_ambiguous(&err);
            tokio::time::sleep(delay).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jitter_is_bounded_and_deterministic() {
        let p = ExponentialBackoff::default();
        let busy = HvError::Busy {
            id: "vm-1".into(),
            detail: "x".into(),
        };
        for (attempt, base) in [(1, 1), (2, 2), (3, 4)] {
            let d = p.retry_after(&busy, attempt);
            let Some(d) = d else {
                panic!("attempt {attempt} should be retried")
            };
            let base = Duration::from_secs(base);
            assert!(d >= base && d <= base.mul_f64(1.2), "{d:?} vs {base:?}");
            assert_eq!(Some(d), p.retry_after(&busy, attempt), "deterministic");
        }
        assert_eq!(p.retry_after(&busy, 4), None);
        let other = HvError::Busy {
            id: "vm-2".into(),
            detail: "x".into(),
        };
        assert_ne!(p.delay(&busy, 1), p.delay(&other, 1), "spread over objects");
        let capped = ExponentialBackoff {
            jitter: 0.0,
            max_retries: 100,
            ..ExponentialBackoff::default()
        };
        assert_eq!(capped.delay(&busy, 40), Duration::from_secs(60));
    }

    #[test]
    fn only_creating_and_disruptive_operations_are_once() {
        let vm = || am_core::VmId::from("v");
        let clone = Action::Clone {
            vm: vm(),
            name: "b".into(),
            host: "h".into(),
            datastore: None,
        };
        assert_eq!(Repeat::of(&clone), Repeat::Once);
        assert_eq!(Repeat::of(&Action::AddHost { spare: "s".into() }), Repeat::Once);
        assert_eq!(Repeat::of(&Action::Reset { vm: vm() }), Repeat::Once);
        assert_eq!(Repeat::of(&Action::PowerOn { vm: vm() }), Repeat::Convergent);
        assert_eq!(
            Repeat::of(&Action::FenceHost { host: "h".into() }),
            Repeat::Convergent
        );
        assert!(is_ambiguous(&HvError::Timeout { op: "x".into() }));
        let on = HvError::invalid_state("v", "powered on on h3");
        let failover = Action::Failover {
            vm: vm(),
            to: "h3".into(),
        };
        assert!(
            already_done(&failover, &on),
            "a failover retried after a lost reply finds the VM running: done"
        );
        assert!(!already_done(&failover, &HvError::not_found("vm", "v")));
        assert!(!is_ambiguous(&HvError::Busy {
            id: "x".into(),
            detail: String::new()
        }));
    }
}
