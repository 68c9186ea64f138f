//! Replication settings that change while the node runs (`POST /config`)
//! and survive its restarts.

use std::path::Path;

use crate::domain::{ReplicationMode, ReplicationSettings, Role};

use super::{Engine, EngineError};

/// Settings set through the admin API, kept across restarts (PostgreSQL's
/// `postgresql.auto.conf`): they override the flags.
pub(super) const SETTINGS_FILE: &str = "settings.auto.json";

pub(super) fn load_settings(data_dir: &Path) -> Result<Option<ReplicationSettings>, EngineError> {
    let path = data_dir.join(SETTINGS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::Io(format!("{}: {e}", path.display()))),
    };
    let settings: ReplicationSettings = serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::Corrupt(format!("{}: {e}", path.display())))?;
    settings
        .validate()
        .map_err(|e| EngineError::Corrupt(format!("{}: {e}", path.display())))?;
    Ok(Some(settings))
}

fn store_settings(data_dir: &Path, settings: &ReplicationSettings) -> Result<(), EngineError> {
    use std::io::Write;
    let path = data_dir.join(SETTINGS_FILE);
    let tmp = data_dir.join(format!("{SETTINGS_FILE}.tmp"));
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let json = serde_json::to_vec_pretty(settings).map_err(|e| EngineError::Io(e.to_string()))?;
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

impl Engine {
    /// Change the replication settings while running, and keep them across
    /// restarts. Taking effect at once:
    /// - a leader that leaves semi-sync/sync commits (and shows) what is
    ///   locally durable, as an async leader would have;
    /// - a leader entering semi-sync/sync holds new writes back until
    ///   followers acknowledge them; writes already acknowledged stay so;
    /// - a waiting write sees a new timeout only from its next wait.
    pub fn set_settings(
        &self,
        settings: ReplicationSettings,
    ) -> Result<ReplicationSettings, EngineError> {
        settings.validate().map_err(EngineError::Settings)?;
        // Under the state lock: a write decides on lossless visibility and
        // appends under it, so no write straddles the change.
        let st = self.state.lock();
        let old = *self.settings.read();
        if old != settings {
            store_settings(&self.opts.data_dir, &settings)?;
            *self.settings.write() = settings;
            tracing::info!(from = ?old, to = ?settings, "replication settings changed");
        }
        drop(st);
        self.recompute_commit();
        // A follower that now applies without waiting for the leader's
        // commit catches up with what it holds.
        if settings.mode == ReplicationMode::Async {
            let mut st = self.state.lock();
            if st.meta.role == Role::Follower {
                self.apply_received(&mut st, u64::MAX);
            }
        }
        Ok(settings)
    }
}
