//! CNI plugin executor (placeholder, filled in below).
