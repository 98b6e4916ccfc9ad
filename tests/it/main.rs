//! The integration tests, as one binary: each module is the tests of one area, run
//! against the real binary, the CDS emulator and real servers on loopback (OpenBao,
//! moto, etcd) or fakes where none can run (Key Vault, the Kubernetes Lease API).
//! What they share is in `support`: the environment (emulator, policy, the binary),
//! the servers and fakes, the fault proxy and the store conformance suite.
//!
//! One binary links once, and its tests share one process: a test may not change
//! process-wide state (environment variables, the current directory, signal
//! dispositions, resource limits, a global `tracing` subscriber); it passes such
//! things to the child it starts instead. The library's own process-wide state is
//! shared too: the notification outbox (a flush waits for every test's events) and the
//! metrics (a test reads a counter's change that only it can cause). Not here: unit
//! tests (next to their code in `src/`), the alert rules' unit tests (`tests/alerts/`,
//! run by promtool).

mod support;

mod audit;
mod aws_run_now;
mod aws_stores;
mod azure_key_vault;
mod children;
mod cli;
mod coordination;
mod daemon_ops;
mod emergency;
mod hooks;
mod hostile;
mod listener;
mod locks;
mod messages;
mod notifiers;
mod pickup;
mod policy_cli;
mod rotation;
mod self_store;
mod service;
mod stores;
mod three_stores;
mod vault_e2e;
