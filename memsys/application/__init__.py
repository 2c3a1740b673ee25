"""Application layer: the manager, cross-store transactions, synchronisation and query routing."""
