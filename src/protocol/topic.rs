//! Topic name and filter validation and matching. (Being written: issue 3.)
