"""Simulated device lab: network namespaces, per-device sshd and foreign-architecture engines (`fleet lab`)."""
