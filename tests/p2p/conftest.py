"""The reference suite's fixtures (``p2p_vm``, ``fresh_p2p_vm``, ``p2p_payload``) come from the
testbed's pytest plugin, :mod:`testbed.pytest_plugin.p2p`, where users' own tests get them too;
isolation between the tests sharing a guest is described there."""
