//! The wire codec. `docs/wire.md` is its specification.
