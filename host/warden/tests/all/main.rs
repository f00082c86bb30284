//! The library's examples, end to end (the library's own behaviour is
//! tested by the workspace's `tests/` crate, which shares its guests).

mod text_filter;
