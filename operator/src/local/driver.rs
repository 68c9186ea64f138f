//! The local-mode [`Driver`]: the brain's record goes to `cluster.json`,
//! role labels move the proxies' routes, events become log lines.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::proxy::Routes;
use super::state::{self, ClusterFile};
use crate::brain::{Event, Plan, Recorded, RoleLabel};
use crate::coordination::{Driver, Member, now_ms};
use crate::crd::MemberStatus;

/// One pass's driver: it borrows the main loop's routes and carries the
/// cluster file the pass starts from (the main loop takes it back after).
pub struct LocalDriver<'a> {
    dir: &'a Path,
    routes: &'a watch::Sender<Routes>,
    file: Mutex<ClusterFile>,
    persisted: AtomicBool,
}

impl<'a> LocalDriver<'a> {
    pub fn new(dir: &'a Path, routes: &'a watch::Sender<Routes>, file: ClusterFile) -> Self {
        Self {
            dir,
            routes,
            file: Mutex::new(file),
            persisted: AtomicBool::new(false),
        }
    }

    /// The cluster file as the pass left it, and whether it is on disk
    /// (the pass recorded a decision).
    pub fn into_file(self) -> (ClusterFile, bool) {
        let file = match self.file.into_inner() {
            Ok(file) => file,
            Err(poisoned) => poisoned.into_inner(),
        };
        (file, self.persisted.into_inner())
    }
}

impl Driver for LocalDriver<'_> {
    fn persist<'a>(
        &'a self,
        plan: &'a Plan,
        members: &'a [MemberStatus],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let next = {
                let base = self.file.lock().map_err(|_| "state lock poisoned")?;
                compose(
                    &base,
                    &plan.record,
                    plan.waiting.as_deref(),
                    members,
                    &self.routes.borrow(),
                )
            };
            save(self.dir, &next).await?;
            if let Ok(mut file) = self.file.lock() {
                *file = next;
                self.persisted.store(true, Ordering::Relaxed);
            }
            Ok(())
        })
    }

    fn label<'a>(
        &'a self,
        member: &'a Member,
        role: Option<RoleLabel>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut known = false;
            self.routes.send_if_modified(|routes| {
                known = routes.members.iter().any(|r| r.name == member.name);
                routes.set_label(&member.name, role)
            });
            if known {
                Ok(())
            } else {
                Err(format!("{} is not a member of this cluster", member.name))
            }
        })
    }

    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if event.is_warning() {
                tracing::warn!("failover: {} {}", event.reason.as_str(), event.message);
            } else {
                tracing::info!("failover: {} {}", event.reason.as_str(), event.message);
            }
        })
    }
}

/// Write the cluster file off the async threads.
pub async fn save(dir: &Path, file: &ClusterFile) -> Result<(), String> {
    let dir = dir.to_path_buf();
    let file = file.clone();
    tokio::task::spawn_blocking(move || state::save(&dir, &file))
        .await
        .map_err(|e| format!("the state writer failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// `base` with the brain's record, its reason to wait, each member's last
/// probe and each member's label.
pub fn compose(
    base: &ClusterFile,
    record: &Recorded,
    waiting: Option<&str>,
    members: &[MemberStatus],
    routes: &Routes,
) -> ClusterFile {
    let mut file = base.clone();
    file.set_recorded(record);
    file.waiting = waiting.map(str::to_string);
    file.updated_at_ms = now_ms();
    for m in &mut file.members {
        m.label = routes.label(&m.name);
        let Some(status) = members.iter().find(|s| s.name == m.name) else {
            continue;
        };
        m.role.clone_from(&status.role);
        m.epoch = u64::try_from(status.epoch).unwrap_or(0);
        m.offset = u64::try_from(status.offset).unwrap_or(0);
        m.lag_bytes = status.lag_bytes.and_then(|v| u64::try_from(v).ok());
        m.lag_ms = status.lag_ms.and_then(|v| u64::try_from(v).ok());
        m.message.clone_from(&status.message);
    }
    file
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::brain::Presence;
    use crate::local::proxy::Route;
    use crate::local::state::MemberRecord;
    use crate::local::test_dir::TestDir;

    fn record(name: &str, port: u16) -> MemberRecord {
        MemberRecord {
            name: name.to_string(),
            node_id: name.to_string(),
            ordinal: 0,
            pid: Some(5),
            data: ([127, 0, 0, 1], port).into(),
            repl: ([127, 0, 0, 1], port + 1).into(),
            admin: ([127, 0, 0, 1], port + 2).into(),
            data_dir: PathBuf::from("/nowhere"),
            log: PathBuf::from("/nowhere.log"),
            netns: None,
            ip: None,
            link: None,
            role: "unknown".to_string(),
            epoch: 0,
            offset: 0,
            lag_bytes: None,
            lag_ms: None,
            label: None,
            message: None,
            restarts: 0,
        }
    }

    fn member(name: &str) -> Member {
        Member {
            name: name.to_string(),
            ordinal: 0,
            admin_addr: String::new(),
            repl_addr: String::new(),
            pod_ready: true,
            role_label: None,
            presence: Presence::Running,
            admin_token: None,
        }
    }

    #[tokio::test]
    async fn persist_writes_the_record_labels_and_probes_to_cluster_json() {
        let dir = TestDir::new();
        let mut base = ClusterFile::new();
        base.members = vec![record("member-0", 20000), record("member-1", 20010)];
        let (routes, _rx) = watch::channel(Routes {
            members: vec![
                Route {
                    name: "member-0".into(),
                    data: ([127, 0, 0, 1], 20000).into(),
                    label: None,
                    ready: false,
                },
                Route {
                    name: "member-1".into(),
                    data: ([127, 0, 0, 1], 20010).into(),
                    label: None,
                    ready: false,
                },
            ],
        });
        let driver = LocalDriver::new(dir.path(), &routes, base);
        driver
            .label(&member("member-0"), Some(RoleLabel::Leader))
            .await
            .unwrap();
        assert!(driver.label(&member("member-9"), None).await.is_err());
        let plan = Plan {
            record: Recorded {
                leader: Some("member-0".into()),
                epoch: 1,
                failover: None,
                last_failover: None,
            },
            steps: Vec::new(),
            events: Vec::new(),
            waiting: Some("why not".into()),
            completed: None,
        };
        let statuses = vec![MemberStatus {
            name: "member-0".into(),
            role: "leader".into(),
            epoch: 1,
            offset: 77,
            ..MemberStatus::default()
        }];
        driver.persist(&plan, &statuses).await.unwrap();
        let on_disk = state::load(dir.path()).unwrap().unwrap();
        assert_eq!(driver.into_file(), (on_disk.clone(), true));
        assert_eq!(on_disk.leader.as_deref(), Some("member-0"));
        assert_eq!(on_disk.epoch, 1);
        assert_eq!(on_disk.waiting.as_deref(), Some("why not"));
        let m0 = on_disk.member("member-0").unwrap();
        assert_eq!((m0.role.as_str(), m0.offset), ("leader", 77));
        assert_eq!(m0.label, Some(RoleLabel::Leader));
        assert_eq!(on_disk.member("member-1").unwrap().label, None);
        assert_eq!(
            routes.borrow().leader().map(|r| r.name.clone()).as_deref(),
            Some("member-0"),
            "the proxies see the label"
        );
    }
}
