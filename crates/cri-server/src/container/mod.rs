//! Containers (issue 4).

pub mod seccomp;
pub mod spec;
