"""The testbed's pytest plugin (registered through the ``pytest11`` entry point).

It gives tests real machines and keeps what is needed to understand a failure:

- ``--testbed-kernel stock|NAME|BZIMAGE`` picks the kernel under test: Debian's stock one
  (the default), a named kernel from ``guest-kernel-config/kernels/`` (built on first use),
  or a bzImage (with ``--testbed-modules``/``--testbed-build``); ``--testbed-accel`` forces
  KVM or TCG;
- every test gets its own folder under ``--testbed-artifacts`` (``testbed-artifacts/`` by
  default) holding each machine's console log, QMP log, dmesg, command line and kernel
  record; the folder is deleted when the test passes, unless ``--testbed-keep-artifacts``;
- ``--testbed-shard I/N`` runs one deterministic part of the tests (CI shards), and under
  pytest-xdist a module's shared-guest tests stay on one worker (:mod:`.parallel`);
- after the test body, the console of every machine the test used is scanned
  (:mod:`testbed.guest.console`); a panic, Oops, WARNING, KASAN report, ... fails the test
  with the excerpt. ``@pytest.mark.console_allows(Problem.PANIC, ...)`` lets a test that
  expects one say so.

A kselftest file (``guest-kernel-config/kselftests/<dir>/<program>.yaml``) named on the command
line is collected as one test per test of the program (:mod:`.kselftest`).

Fixtures: ``testbed_settings``, ``testbed_kernel``, ``artifact_dir``, ``machine_factory``,
``vm`` (the default machine, booted), and for guests with the P2P drivers loaded
``p2p_payload``, ``p2p_vm`` and ``fresh_p2p_vm`` (:mod:`testbed.pytest_plugin.p2p`).
docs/plugin.md is the user's guide, with a worked example.
"""

from testbed.pytest_plugin.fixtures import (
    artifact_dir,
    machine_factory,
    testbed_kernel,
    testbed_settings,
    vm,
)
from testbed.pytest_plugin.hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_report_header,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
from testbed.pytest_plugin.kselftest import pytest_collect_file
from testbed.pytest_plugin.p2p import (
    fresh_p2p_vm,
    p2p_payload,
    p2p_snapshot,
    p2p_vm,
    shared_p2p_machine,
)

__all__ = [
    "artifact_dir",
    "fresh_p2p_vm",
    "machine_factory",
    "p2p_payload",
    "p2p_snapshot",
    "p2p_vm",
    "pytest_addoption",
    "pytest_collect_file",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_report_header",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_terminal_summary",
    "shared_p2p_machine",
    "testbed_kernel",
    "testbed_settings",
    "vm",
]
