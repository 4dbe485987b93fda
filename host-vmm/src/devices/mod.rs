//! Virtual devices. Each device has the same shape: a struct the ViMA call handlers use,
//! with its own statistics. Only the console (VCON) exists so far.

pub mod console;
