//! msgnet
