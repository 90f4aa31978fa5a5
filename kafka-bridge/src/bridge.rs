//! Request/reply over the `BLK_*` topics and `BLK_Res` (being written).
