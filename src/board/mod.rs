//! What a real board needs that QEMU cannot show: the drivers on the way from the kernel to
//! the root, read from the board's device trees and the kernel's own tables.

pub mod device_tree;
pub mod kernel_tables;
pub mod root_drivers;
