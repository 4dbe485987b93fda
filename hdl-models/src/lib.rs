//! RTL of the FPGA offload pipeline.
//!
//! Not built yet. This crate will hold the Verilog of the pipeline (parse, directory
//! lookup, DMA issue, invalidation fan-out, interrupt steering) and, with feature
//! `hdl-sim`, its Verilator simulation checked against `nic-firmware` on the same traces.
