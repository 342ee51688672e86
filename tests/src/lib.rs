//! End-to-end tests of keypack live in `tests/e2e/`.
