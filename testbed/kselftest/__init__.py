"""Upstream kselftests in the guest: ``testbed run --kselftest mm/hmm-tests``.

A kselftest file (``guest-kernel-config/kselftests/<dir>/<program>.yaml``,
:mod:`testbed.config.kselftests`) names a ``tools/testing/selftests`` program and what it needs
from the kernel. :mod:`.build` compiles it static from the named kernel's own source (series
applied) into the cache and lists its tests with the harness's ``-l``; :mod:`.guest` checks the
kernel has what it needs (config options, modules) before anything boots and runs the program
once in a guest, bounded, keeping whatever it printed; :mod:`testbed.ktap` parses the output.
The pytest plugin (:mod:`testbed.pytest_plugin.kselftest`) makes each test a pytest item, so
the results table, JUnit and ``--ktap`` show them like any other test.
"""
