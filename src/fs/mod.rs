//! Filesystems written into the disk file: FAT32 in-process (`fat`), ext4 by mke2fs
//! straight from the root tar (`ext4`).

pub mod ext4;
pub mod fat;
