//! The controller: a thin `reconcile` running the pipeline
//! validate -> build -> apply (server-side apply, one field manager) ->
//! hand the store to its failover driver ([`driver`]), which probes the
//! members on its own timer, runs the failover brain, moves the role
//! labels and writes the status.

pub mod driver;
pub mod lease;
pub mod members;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::brain;
use crate::build::{Objects, build_all, secret};
use crate::coordination::NodeAdmin;
use crate::crd::{ReplicatedStore, ReplicatedStoreStatus};
use crate::error::Error;
use crate::labels::{self, FIELD_MANAGER};
use crate::metrics::Metrics;
use crate::validate::ValidatedStore;
use crate::validate::validate;

/// Settings of the running controller.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Node image for stores without `spec.image`.
    pub default_image: Option<String>,
    /// Apply a NetworkPolicy per store that closes the replication and
    /// admin ports to all but members and the operator.
    pub network_policy: bool,
    /// The namespace the operator's pods run in (`POD_NAMESPACE`): the
    /// only one the NetworkPolicy admits the operator from.
    pub operator_namespace: String,
}

/// Shared by every reconcile and the HTTP server.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub admin: Arc<dyn NodeAdmin>,
    pub settings: Settings,
    /// One failover driver task per store.
    pub drivers: driver::Drivers,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        admin: Arc<dyn NodeAdmin>,
        settings: Settings,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER));
        Self {
            client,
            recorder,
            metrics,
            admin,
            settings,
            drivers: driver::Drivers::default(),
        }
    }
}

/// Reconcile one ReplicatedStore.
pub async fn reconcile(store: Arc<ReplicatedStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start_reconcile();
    let name = store.name_any();
    let namespace = store.namespace().unwrap_or_else(|| "default".to_string());
    if store.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove every object;
        // the StatefulSet's PVC retention policy decides about the data.
        ctx.drivers.stop(&namespace, &name);
        return Ok(Action::await_change());
    }
    let previous = store.status.clone().unwrap_or_default();
    let generation = store.metadata.generation;

    let validated = match validate(&store, ctx.settings.default_image.as_deref()) {
        Ok(v) => v,
        Err(err) => {
            tracing::warn!(%name, %namespace, %err, "invalid spec");
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let new_status = status::invalid(&previous, &err, generation, &now);
            if new_status != previous {
                publish(
                    &ctx,
                    &store,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    err.to_string(),
                )
                .await;
                patch_status(&ctx, &name, &namespace, &new_status).await?;
            }
            return Err(Error::InvalidSpec(err));
        }
    };

    // Scale-down never removes the leader (a switchover moves it first).
    let leader_ordinal = previous
        .leader
        .as_deref()
        .and_then(|l| labels::pod_ordinal(&name, l));
    let (statefulset_replicas, scale_down_blocked) =
        brain::statefulset_replicas(validated.replicas(), leader_ordinal);
    ensure_admin_token(&ctx, &validated).await?;
    apply_network_policy(&ctx, &validated).await?;
    apply_all(
        &ctx,
        &namespace,
        &build_all(&validated, statefulset_replicas),
    )
    .await?;
    if let Some(blocked) = scale_down_blocked
        && !previous
            .conditions
            .iter()
            .any(|c| c.reason == "ScaleDownBlocked")
    {
        publish(
            &ctx,
            &store,
            EventType::Warning,
            "ScaleDownBlocked",
            "Scale",
            blocked,
        )
        .await;
    }
    // Pod changes (a leader pod deleted) reach the driver at once.
    ctx.drivers.ensure(&ctx, &validated);
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Create the store's admin token Secret once. It is never rewritten: the
/// running members hold the token it had when they started.
pub(crate) async fn ensure_admin_token(ctx: &Context, store: &ValidatedStore) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &store.namespace);
    let name = labels::admin_token_secret_name(&store.name);
    if secrets
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get Secret {name}")))?
        .is_some()
    {
        return Ok(());
    }
    let secret = secret::admin_token_secret(store, &secret::new_admin_token());
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %name, "admin token created");
            Ok(())
        }
        // Created meanwhile (another pass): the first one stays.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("create Secret {name}"))(e)),
    }
}

/// The store's admin token, when its Secret exists.
pub async fn admin_token(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<crate::coordination::admin::AdminToken>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_name = labels::admin_token_secret_name(name);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(Error::kube(format!("get Secret {secret_name}")))?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(crate::build::pod::ADMIN_TOKEN_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .filter(|t| !t.is_empty())
        .map(crate::coordination::admin::AdminToken))
}

/// Count the error by category and requeue per its policy.
pub fn error_policy(store: Arc<ReplicatedStore>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %store.name_any(), category = error.category(), %error, "reconcile failed");
    ctx.metrics.error(error.category());
    Action::requeue(error.requeue_after())
}

fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn apply<K>(ctx: &Context, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))?;
    Ok(())
}

async fn apply_all(ctx: &Context, namespace: &str, objects: &Objects) -> Result<(), Error> {
    apply::<Service>(ctx, namespace, &objects.headless).await?;
    apply::<Service>(ctx, namespace, &objects.leader).await?;
    apply::<Service>(ctx, namespace, &objects.read).await?;
    apply::<PodDisruptionBudget>(ctx, namespace, &objects.pdb).await?;
    apply::<StatefulSet>(ctx, namespace, &objects.statefulset).await?;
    Ok(())
}

/// Apply the store's NetworkPolicy, or with the setting off delete the
/// one an earlier run made (ours: owned by this store), so turning the
/// flag off does not leave the ports closed by a policy nobody updates.
async fn apply_network_policy(ctx: &Context, store: &ValidatedStore) -> Result<(), Error> {
    if ctx.settings.network_policy {
        let policy = crate::build::netpol::build(store, &ctx.settings.operator_namespace);
        return apply::<NetworkPolicy>(ctx, &store.namespace, &policy).await;
    }
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &store.namespace);
    let Some(existing) = api
        .get_opt(&store.name)
        .await
        .map_err(Error::kube(format!("get NetworkPolicy {}", store.name)))?
    else {
        return Ok(());
    };
    let ours = store.owner.as_ref().is_some_and(|owner| {
        existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner.uid)
    });
    if !ours {
        return Ok(());
    }
    match api.delete(&store.name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(name = %store.name, namespace = %store.namespace, "network policy turned off: deleted the store's NetworkPolicy");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("delete NetworkPolicy {}", store.name))(
            e,
        )),
    }
}

/// Publish an Event; failing to is logged, never fatal.
async fn publish(
    ctx: &Context,
    store: &ReplicatedStore,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_about(ctx, store, None, type_, reason, action, note).await;
}

/// Publish an Event whose `secondary` is the member pod it concerns (which
/// also keeps one member's event from folding into another's series).
async fn publish_about(
    ctx: &Context,
    store: &ReplicatedStore,
    pod: Option<&str>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let secondary = pod.map(|name| k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        name: Some(name.to_string()),
        namespace: store.namespace(),
        ..Default::default()
    });
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary,
    };
    if let Err(err) = ctx.recorder.publish(&event, &store.object_ref(&())).await {
        tracing::warn!(%err, reason, "cannot publish event");
    }
}

async fn patch_status(
    ctx: &Context,
    name: &str,
    namespace: &str,
    status: &ReplicatedStoreStatus,
) -> Result<(), Error> {
    let api: Api<ReplicatedStore> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": "ReplicatedStore",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!("update status of {name}")))?;
    Ok(())
}

/// Run the controller until shutdown. `namespace`: watch one namespace
/// (None: all).
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let stores: Api<ReplicatedStore> = api(&client, &namespace);
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    Controller::new(stores, watcher::Config::default().any_semantic())
        .owns(api::<StatefulSet>(&client, &namespace), owned.clone())
        .owns(api::<Service>(&client, &namespace), owned.clone())
        .owns(
            api::<PodDisruptionBudget>(&client, &namespace),
            owned.clone(),
        )
        // Pods belong to the StatefulSet; map them to their store by label
        // so a pod turning ready (or dying) reconciles at once.
        .watches(api::<Pod>(&client, &namespace), owned, |pod: Pod| {
            let instance = pod.labels().get("app.kubernetes.io/instance").cloned();
            let namespace = pod.namespace();
            instance.map(|i| {
                let r = ObjectRef::<ReplicatedStore>::new(&i);
                match namespace {
                    Some(ns) => r.within(&ns),
                    None => r,
                }
            })
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(err) => tracing::debug!(%err, "reconcile did not complete"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
