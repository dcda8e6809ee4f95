//! The disk: where partitions lie (`layout`) and the GPT that describes them (`gpt`).

pub mod gpt;
pub mod layout;
