"""Pure policies: snapshots in, decisions with reasons out. No I/O, no clock."""
