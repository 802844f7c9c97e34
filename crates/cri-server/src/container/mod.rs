//! Containers (issue 4).

#[cfg(test)]
mod golden;
pub mod seccomp;
pub mod spec;
