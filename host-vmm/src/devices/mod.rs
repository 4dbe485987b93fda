//! Virtual devices. Each device has the same shape: a struct the ViMA call handlers use,
//! with its own statistics. The console (VCON) is the only device so far: its output
//! ([`console`]) and, for a Linux program, its input ([`console_input`]).

pub mod console;
pub mod console_input;
