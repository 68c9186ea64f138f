//! Keyspace checkpoints (snapshots).
