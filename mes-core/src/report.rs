//! TODO(issue 2): report
