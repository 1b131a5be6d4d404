//! The process allocator: mimalloc, for every binary that links the library
//! (the functions, the local server and CLI, the tests and the benchmark).
//!
//! Intake is allocation-heavy (a request's headers, its JSON, the alert
//! documents, the store's arguments). With glibc's malloc, allocation was
//! a fifth of the guard's CPU under load; mimalloc cut the guard's CPU per
//! alert by about 20% (28 to 22 µs, Redis store, 32 clients, measured side
//! by side with the same benchmark build). No pure-Rust allocator is a
//! general-purpose match; mimalloc is C compiled by the `cc` crate, which
//! Vercel's builder (`cargo zigbuild`) handles like the bundled SQLite.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
