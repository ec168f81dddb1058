"""p2p-testbed: boot QEMU guests with an emulated P2P exporter and importer, hot-unplug, assert.

The package is layered so that a newcomer can guess where a thing lives:

- :mod:`testbed.errors`, :mod:`testbed.deadline` -- the error tree and shared time budgets;
- :mod:`testbed.config` -- frozen dataclasses loaded from strict YAML (data, no actions);
- :mod:`testbed.kernel` -- obtaining the kernel under test (stock Debian package or a build);
- :mod:`testbed.qemu` -- argv building, process control, QMP, the machine context manager;
- :mod:`testbed.devices` -- hot-plug and unplug of the devices a machine spec names;
- :mod:`testbed.guest` -- initramfs, SSH, serial-console health;
- :mod:`testbed.pytest_plugin` -- fixtures that hand a booted machine to a test.

Keep this module import-light: every ``testbed`` command imports it first.

PYTEST_DONT_REWRITE: pytest would rewrite the asserts of an installed plugin's package, but
``testbed run`` imports this package before pytest starts; there are no test asserts here.
"""

__version__ = "0.1.0"
