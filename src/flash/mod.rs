//! `imgforge flash IMAGE TARGET`: writing an image to a card safely, fast, and verified.
//!
//! Everything that can be checked is checked before the first byte is written: the image is
//! one of ours and whole (`artifact::image`), its bmap fits it (`source`), the target is not
//! the image (`same_file`), the secrets fit the seed area (`crate::seed`), the target may be
//! written (`target`).
//!
//! - `source`: reading .img and .img.xz (liblzma, in-process), and the image's bmap.
//! - `same_file`: refusing a target that is the image, by inode, device or loop backing file.
//! - `target`: refusing what must not be written (mounted, swap, held, fixed disks, too
//!   small), describing the device, asking for confirmation, opening it exclusively.
//! - `write`: old tables wiped first, the body (mapped ranges only with a bmap), read back and
//!   compared, then the image's partition tables, then sync; any error wipes the tables
//!   again so a half-written card never boots.

pub mod same_file;
pub mod source;
pub mod target;
pub mod write;
