//! The Redis store: one set of limits shared by every process and machine.

pub(crate) mod script;
