"""Device types (from ``qemu-devices/*/device.yaml``), machine specs, and hot-plug."""
