//! Operator high availability: one active replica at a time, chosen by a
//! `coordination.k8s.io` Lease (as client-go's leader election does). The
//! holder renews it every `renew_every`; a standby takes it once it has not
//! been renewed for `duration`. Writes go through the API server's
//! optimistic concurrency (resourceVersion), so two candidates can never
//! both win one round. An active replica that cannot renew within
//! `duration` stops (its process exits and restarts as a standby): it must
//! not go on acting once another may have taken over. The failover brain's
//! state is in each store's status, so the new holder resumes any failover
//! in progress.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

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

/// One round: renew or take the Lease when allowed. `Ok(true)` when this
/// replica holds it afterwards.
pub async fn try_acquire_or_renew(client: &Client, s: &LeaseSettings) -> Result<bool, Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let now = Timestamp::now();
    let current = api
        .get_opt(&s.name)
        .await
        .map_err(Error::kube(format!("get Lease {}", s.name)))?;
    let decision = claim(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &s.identity,
        now,
    );
    let seconds = i32::try_from(s.duration.as_secs()).unwrap_or(15);
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
            api.create(&PostParams::default(), &lease).await
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
            api.replace(&s.name, &PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("write Lease {}", s.name))(e)),
    }
}

/// Wait until this replica holds the Lease.
pub async fn acquire(client: &Client, s: &LeaseSettings) {
    let mut announced = false;
    loop {
        match try_acquire_or_renew(client, s).await {
            Ok(true) => {
                tracing::info!(lease = %s.name, identity = %s.identity, "leading: this operator replica is active");
                return;
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

/// Renew until a renewal has failed for `duration`; returns then (the
/// caller must stop acting).
pub async fn keep(client: &Client, s: &LeaseSettings) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(s.renew_every).await;
        match try_acquire_or_renew(client, s).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %s.name, "another operator replica took the lease");
                return;
            }
            Err(err) => tracing::warn!(%err, "cannot renew the lease"),
        }
        // Stop before a standby may take over (renew_every < duration).
        if last_renewed.elapsed() + s.renew_every >= s.duration {
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
