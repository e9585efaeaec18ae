"""Loopback emulators of the real services, serving a deterministic synthetic cover set."""
