"""Data: machines, device types and device instances as frozen dataclasses from strict YAML."""
