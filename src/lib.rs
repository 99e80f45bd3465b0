//! cs-upgrade: the orchestrator.
