//! Python's values: the data model both formats carry.

#[allow(dead_code)] // used by the value type and the formats, which land next
pub(crate) mod magic;
