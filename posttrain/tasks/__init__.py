"""Offline tasks (addition with five hint levels, instruction-following constraints) and
tiny models built locally (no hub)."""
