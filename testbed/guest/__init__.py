"""The guest: its initramfs, SSH access, and serial-console health."""
