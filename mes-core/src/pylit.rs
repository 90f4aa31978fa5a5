//! TODO(issue 2): pylit
