//! The HTTP implementation of [`super::ConnectApi`] (being written).
