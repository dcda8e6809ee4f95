//! `imgforge flash IMAGE TARGET`: writing an image to a card safely, fast, and verified.
//!
//! - `source`: reading .img and .img.xz, and finding the image's bmap.
//! - `target`: refusing what must not be written (mounted, swap, held, fixed disks, too
//!   small), describing the device, asking for confirmation, opening it exclusively.
//! - `write`: old tables wiped first, the body (mapped ranges only with a bmap), read back and
//!   compared, then the image's partition tables, then sync; any error wipes the tables
//!   again so a half-written card never boots.

pub mod source;
pub mod target;
pub mod write;
