"""Ray integration (WIP)."""
