//! Wiring: `run(config, listener, shutdown)`.
