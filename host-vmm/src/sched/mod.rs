//! Time-driven work of a node: the per-VP timers behind `TimerSet`.

pub mod timer;
