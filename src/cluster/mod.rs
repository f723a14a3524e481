//! Running one pipeline as several processes: where they are, and starting them locally.

pub mod hosts;
pub mod launch;

pub use hosts::{local_hosts, resolve_hosts, resolve_process_id};
pub use launch::{Launch, LaunchOutcome, launch};
