//! The runner: turns a claimed build into a finished one. Checkout
//! ([`checkout`]), steps ([`step`]) and logs ([`log`]).

pub mod build;
pub mod cgroup;
pub mod checkout;
pub mod leftovers;
pub mod log;
pub mod private_dirs;
pub mod sandbox;
pub mod step;
