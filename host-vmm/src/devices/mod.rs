//! Virtual devices. Each device has the same shape: a struct the ViMA call handlers use,
//! with its own statistics. The console (VCON): its output ([`console`]) and, for a Linux
//! program, its input ([`console_input`]) and its terminal ([`terminal`]); and a Linux
//! program's read-only root ([`root_fs`]).

pub mod console;
pub mod console_input;
pub mod root_fs;
pub mod terminal;
