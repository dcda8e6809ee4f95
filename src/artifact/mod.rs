//! The files an image ships as, one module per format: the disk image itself, raw or
//! compressed, checked as one of ours (`image`), its block map (`bmap`), sparse copies of it
//! (`sparse`), and its .xz (`xz`).

pub mod bmap;
pub mod image;
pub mod sparse;
pub mod xz;
