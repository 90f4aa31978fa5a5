//! The chain gateway simulator (being written).
