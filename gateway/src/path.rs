//! Request-path normalisation: core's normaliser (one for the gateway and for `gatehouse
//! policy check`, so the two can never read a path differently).

pub use gatehouse_core::path::{PathError, normalize};
