//! The process allocator: mimalloc, for every binary that links the library
//! (the functions, the local server and CLI, the tests and the benchmark).
//!
//! Intake is allocation-heavy (a request's headers, its JSON, the alert
//! documents, the store's arguments). With glibc's malloc, allocation was
//! a fifth of the guard's CPU under load; mimalloc cut the benchmark
//! process's CPU per alert (the guard and its load generator) by about 20%
//! (28 to 22 µs, Redis store, 32 clients, the same benchmark built both
//! ways and run alternately). No pure-Rust allocator is a
//! general-purpose match; mimalloc is C compiled by the `cc` crate, which
//! Vercel's builder (`cargo zigbuild`) handles like the bundled SQLite.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
