//! Operator high availability: one active replica at a time, chosen by a
//! `coordination.k8s.io` Lease (as client-go's leader election does). The
//! holder renews it every `renew_every`; a standby takes it once it has not
//! been renewed for `duration`. Writes go through the API server's
//! optimistic concurrency (resourceVersion), so two candidates can never
//! both win one round. An active replica that cannot renew within
//! `duration` stops (its process exits and restarts as a standby): it must
//! not go on acting once another may have taken over. Every API call of a
//! round is bounded by the time left before that point ([`call_budget`]),
//! so a call that hangs (a partitioned API server, a stuck connection)
//! cannot keep this replica acting past its lease. The failover brain's
//! state is in each store's status, so the new holder resumes any failover
//! in progress.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::error::Error;

/// Who competes for which Lease.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// A holder that has not renewed for this long may be replaced.
    pub duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub renew_every: Duration,
}

/// What a candidate may do with the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It is ours: renew it.
    Renew,
    /// Free or expired: take it (a new term: the transition count grows).
    Take,
    /// Another holder renewed it recently.
    Wait,
}

/// Pure rule: what `me` may do with `spec` at `now`.
pub fn claim(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Claim {
    let Some(spec) = spec else {
        return Claim::Take;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => return Claim::Renew,
        None | Some("") => return Claim::Take,
        Some(_) => {}
    }
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
    match renewed {
        Some(t) if now.duration_since(t.0) < SignedDuration::from_secs(seconds) => Claim::Wait,
        _ => Claim::Take,
    }
}

/// Until when a replica that renewed (or took) the Lease with a round
/// that began at `renewed_at` may act: one renewal period before the lease
/// expires, so it has stopped before any standby may take over (a
/// standby counts from the renew time written, which is taken when the
/// round begins, never later).
pub fn acting_deadline(renewed_at: Instant, s: &LeaseSettings) -> Instant {
    renewed_at + s.duration.saturating_sub(s.renew_every)
}

/// Time an API call may take at `now` before `deadline`; `None` when none
/// is left.
pub fn call_budget(deadline: Instant, now: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(now)
        .filter(|left| !left.is_zero())
}

/// Why a round did not settle who holds the Lease.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Api(#[from] Error),
    /// A call did not answer before `deadline`.
    #[error("{0} did not answer before the lease deadline")]
    Deadline(String),
}

/// `call` if it finishes before `deadline`.
async fn bounded<T>(
    deadline: Instant,
    what: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, RoundError> {
    let Some(budget) = call_budget(deadline, Instant::now()) else {
        return Err(RoundError::Deadline(what.to_string()));
    };
    tokio::time::timeout(budget, call)
        .await
        .map_err(|_| RoundError::Deadline(what.to_string()))
}

/// One round: renew or take the Lease when allowed, each API call bounded
/// by `deadline`. `Ok(true)` when this replica holds it afterwards.
pub async fn try_acquire_or_renew(
    client: &Client,
    s: &LeaseSettings,
    deadline: Instant,
) -> Result<bool, RoundError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let now = Timestamp::now();
    let get = format!("get Lease {}", s.name);
    let current = bounded(deadline, &get, api.get_opt(&s.name))
        .await?
        .map_err(Error::kube(get))?;
    let decision = claim(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &s.identity,
        now,
    );
    let seconds = i32::try_from(s.duration.as_secs()).unwrap_or(15);
    let write = format!("write Lease {}", s.name);
    let result = match (decision, current) {
        (Claim::Wait, _) => return Ok(false),
        (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            bounded(deadline, &write, api.create(&PostParams::default(), &lease)).await?
        }
        (decision, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if decision == Claim::Take {
                spec.holder_identity = Some(s.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(MicroTime(now));
            // resourceVersion from the read: a concurrent writer makes this 409.
            bounded(
                deadline,
                &write,
                api.replace(&s.name, &PostParams::default(), &lease),
            )
            .await?
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(write)(e).into()),
    }
}

/// Wait until this replica holds the Lease; returns when the winning round
/// began (what [`keep`] counts the lease from).
pub async fn acquire(client: &Client, s: &LeaseSettings) -> Instant {
    let mut announced = false;
    loop {
        let started = Instant::now();
        // A round that ends past this would hold a lease already running out.
        match try_acquire_or_renew(client, s, acting_deadline(started, s)).await {
            Ok(true) => {
                tracing::info!(lease = %s.name, identity = %s.identity, "leading: this operator replica is active");
                return started;
            }
            Ok(false) if !announced => {
                tracing::info!(lease = %s.name, identity = %s.identity, "standing by: another operator replica is active");
                announced = true;
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(%err, "leader election round failed"),
        }
        // A standby looks often (as client-go's 2 s retry period), so it
        // takes over soon after the lease expires, not a renewal later.
        tokio::time::sleep(s.renew_every.min(STANDBY_RETRY)).await;
    }
}

/// How often a standby tries to take the lease.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// Renew a lease won by a round that began at `renewed_at` until a renewal
/// fails to finish before [`acting_deadline`]; returns then (the caller
/// must stop acting).
pub async fn keep(client: &Client, s: &LeaseSettings, renewed_at: Instant) {
    let mut renewed_at = renewed_at;
    let mut wait = s.renew_every;
    loop {
        tokio::time::sleep(wait).await;
        let started = Instant::now();
        match try_acquire_or_renew(client, s, acting_deadline(renewed_at, s)).await {
            Ok(true) => {
                renewed_at = started;
                wait = s.renew_every;
            }
            Ok(false) => {
                tracing::error!(lease = %s.name, "another operator replica took the lease");
                return;
            }
            Err(RoundError::Deadline(what)) => {
                tracing::error!(lease = %s.name, "{what} did not answer before the lease ran out; stopping");
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot renew the lease");
                // Try again soon: the time left is the lease's, not a period's.
                wait = s.renew_every.min(STANDBY_RETRY);
            }
        }
        // Stop before a standby may take over: the next round would begin
        // with no time left to renew.
        if call_budget(acting_deadline(renewed_at, s), Instant::now() + wait).is_none() {
            tracing::error!(lease = %s.name, "lease not renewed in time; stopping");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64) -> LeaseSpec {
        let t = Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago);
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t)),
            ..LeaseSpec::default()
        }
    }

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_holder_may_act_until_one_renewal_period_before_its_lease_expires() {
        let renewed = Instant::now();
        let deadline = acting_deadline(renewed, &settings());
        assert_eq!(deadline, renewed + Duration::from_secs(10));
        assert_eq!(
            call_budget(deadline, renewed + Duration::from_secs(6)),
            Some(Duration::from_secs(4)),
            "a call made 6 s after the renewal may take what is left"
        );
        assert_eq!(call_budget(deadline, deadline), None);
        assert_eq!(
            call_budget(deadline, deadline + Duration::from_secs(1)),
            None
        );
    }

    #[tokio::test]
    async fn a_call_that_hangs_is_cut_at_the_lease_deadline() {
        let deadline = Instant::now() + Duration::from_millis(50);
        let hung = std::future::pending::<Result<(), kube::Error>>();
        let started = Instant::now();
        let result = bounded(deadline, "get Lease l", hung).await;
        assert!(matches!(result, Err(RoundError::Deadline(_))));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Past the deadline a call is not even made.
        let made = std::sync::atomic::AtomicBool::new(false);
        let result = bounded(Instant::now(), "write Lease l", async {
            made.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert!(matches!(result, Err(RoundError::Deadline(_))));
        assert!(!made.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn a_missing_or_unheld_lease_is_taken() {
        assert_eq!(claim(None, "a", Timestamp::now()), Claim::Take);
        assert_eq!(
            claim(Some(&spec(None, 0)), "a", Timestamp::now()),
            Claim::Take
        );
    }

    #[test]
    fn the_holder_renews_its_own_lease_even_late() {
        assert_eq!(
            claim(Some(&spec(Some("a"), 100)), "a", Timestamp::now()),
            Claim::Renew
        );
    }

    #[test]
    fn a_standby_waits_while_the_holder_renews_and_takes_over_once_it_stops() {
        let now = Timestamp::now();
        assert_eq!(claim(Some(&spec(Some("a"), 3)), "b", now), Claim::Wait);
        assert_eq!(claim(Some(&spec(Some("a"), 14)), "b", now), Claim::Wait);
        assert_eq!(claim(Some(&spec(Some("a"), 16)), "b", now), Claim::Take);
    }
}
