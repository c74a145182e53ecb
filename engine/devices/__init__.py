"""Devices: the physical address map and, later, DIMMs and the balloon."""
