//! msgnet-kad: Kademlia on messages (in progress).
