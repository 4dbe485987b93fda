//! The host <-> NIC device interface.
//!
//! Not built yet. This crate will hold the BAR register layout, descriptor rings in shared
//! memory, doorbells and MSI-X eventfds, with a vfio-user client for the NIC model and a
//! kernel VFIO client (feature `vfio-hw`) for real cards.
