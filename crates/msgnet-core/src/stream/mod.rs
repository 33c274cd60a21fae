//! Multipacket frames over a reliable, ordered byte stream (libp2p streams).
