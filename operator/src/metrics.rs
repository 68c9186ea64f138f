//! Operator metrics (Prometheus text at `/metrics`).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub result: String,
}

/// Every metric the operator exports, and the registry holding them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub member_actions: Family<ActionLabels, Counter>,
    /// `rstore_failovers_total{reason}` (the contract's name, no prefix).
    pub failovers: Family<FailoverLabels, Counter>,
    /// `rstore_failover_duration_seconds`: detection start to relabelled.
    pub failover_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let failovers = Family::<FailoverLabels, Counter>::default();
        let failover_duration =
            Histogram::new([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0]);
        root.register(
            "rstore_failovers",
            "Completed failovers and switchovers by reason",
            failovers.clone(),
        );
        root.register(
            "rstore_failover_duration_seconds",
            "Failover duration from the first failed probe to the moved labels",
            failover_duration.clone(),
        );
        let registry = root.sub_registry_with_prefix("rstore_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let member_actions = Family::<ActionLabels, Counter>::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconciliation duration",
            duration.clone(),
        );
        registry.register(
            "member_actions",
            "Admin calls to members (promote, follow) by result",
            member_actions.clone(),
        );
        Self {
            registry: root,
            reconciles,
            errors,
            duration,
            member_actions,
            failovers,
            failover_duration,
        }
    }
}

impl Metrics {
    /// Count a reconcile and time it until the guard drops.
    pub fn start_reconcile(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    pub fn error(&self, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                category: category.to_string(),
            })
            .inc();
    }

    pub fn member_action(&self, action: &str, ok: bool) {
        self.member_actions
            .get_or_create(&ActionLabels {
                action: action.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// Count a completed failover that took `seconds`.
    pub fn failover(&self, reason: &str, seconds: f64) {
        self.failovers
            .get_or_create(&FailoverLabels {
                reason: reason.to_string(),
            })
            .inc();
        self.failover_duration.observe(seconds);
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::default();
        drop(m.start_reconcile());
        m.error("kube_api");
        m.member_action("promote", true);
        let text = m.encode().unwrap();
        assert!(
            text.contains("rstore_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("rstore_operator_reconcile_errors_total{category=\"kube_api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "rstore_operator_member_actions_total{action=\"promote\",result=\"ok\"} 1"
            )
        );
        assert!(text.contains("rstore_operator_reconcile_duration_seconds_count 1"));
    }

    #[test]
    fn failovers_use_the_contracts_names() {
        let m = Metrics::default();
        m.failover("LeaderGone", 0.2);
        m.failover("LeaderGone", 1.2);
        m.failover("Switchover", 0.1);
        let text = m.encode().unwrap();
        assert!(
            text.contains("rstore_failovers_total{reason=\"LeaderGone\"} 2"),
            "{text}"
        );
        assert!(text.contains("rstore_failovers_total{reason=\"Switchover\"} 1"));
        assert!(text.contains("rstore_failover_duration_seconds_count 3"));
        assert!(text.contains("rstore_failover_duration_seconds_bucket{le=\"0.25\"} 2"));
    }
}
