//! rstore-operator: reconciles `ReplicatedStore` resources and runs the same
//! failover logic in a local (process) mode.
