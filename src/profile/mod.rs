//! Profiles: the TOML files that describe targets, roles and sites.
//!
//! - `schema` holds the typed file formats (unknown keys are errors).
//! - `load` reads them from the embedded copy or a folder, with errors naming the file,
//!   line, column and key.
//! - `merge` is the layering rule (common, then target, then role).

pub mod load;
pub mod merge;
pub mod schema;

pub use load::ProfileSource;
pub use schema::{App, Database, Job, Layer, PgDump, Qemu, Raspi, Service, Site, Slot};
