//! Logical memory of one node (being written).
