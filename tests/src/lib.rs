//! Helpers for end-to-end tests: spawn real `rstore-node` processes on
//! loopback ports and talk to them with real Redis clients.
