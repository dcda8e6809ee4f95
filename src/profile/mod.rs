//! Profiles: the TOML files that describe targets, roles and sites.
//!
//! - `schema` holds the typed file formats (unknown keys are errors); `machine`,
//!   `unit_values` and `checked` the typed values in them, refused while the file is read.
//! - `load` reads them from a folder and the copy embedded in the binary, with errors
//!   naming the file, line, column and key.
//! - `check` checks one layer file as a whole (names used twice, exec and env rules).
//! - `merge` is the layering rule (common, then target, then role).

pub mod check;
pub mod checked;
pub mod load;
pub mod machine;
pub mod merge;
pub mod schema;
pub mod unit_values;

pub use load::ProfileSource;
pub use schema::{App, Database, Job, Layer, PgDump, Qemu, Raspi, Service, Site, Slot};
