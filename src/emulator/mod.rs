//! A CDS emulator (being written).
