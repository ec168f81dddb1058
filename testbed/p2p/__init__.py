"""The P2P guest drivers as seen from the host: building them into a guest, driving them.

- :mod:`testbed.p2p.payload` -- the modules and ``p2pctl`` a machine needs (built, cached);
- :mod:`testbed.p2p.ctl` -- run ``p2pctl`` in the guest and read its JSON lines, in the
  foreground or held in the background across a host action (an unplug);
- :mod:`testbed.p2p.debugfs` -- the drivers' counters and their shared event timeline.

The drivers' own interface is documented in ``qemu-devices/p2p/README.md``.
"""
