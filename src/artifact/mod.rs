//! The files an image ships as, one module per format: its block map (`bmap`), sparse copies
//! of it (`sparse`), and its .xz (`xz`).

pub mod bmap;
pub mod sparse;
pub mod xz;
