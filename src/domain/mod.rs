//! The value types every layer shares; a leaf: it imports nothing from behaviour modules.

pub mod service_url;
