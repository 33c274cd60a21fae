//! msgnet-sim: deterministic simulator (in progress).
