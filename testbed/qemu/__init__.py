"""QEMU: argv building (pure), process control, QMP, accelerator choice, the machine."""
