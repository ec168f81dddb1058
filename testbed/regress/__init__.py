"""What a patch series changed, and which patch did it: ``testbed regress`` and ``testbed bisect``.

Both run the suite (or any selection of it) through ``testbed run`` in a child process per
kernel and per repeat, each with its own JUnit file and artifact folder, and compare what the
JUnit files say. The pure parts are apart from the parts that act:

- :mod:`testbed.regress.results` -- JUnit XML to per-test outcomes, repeats to failure rates,
  the per-side merged JUnit file;
- :mod:`testbed.regress.verdict` -- base vs patched per test (regression, fix, unchanged,
  flaky, skip transitions), the table, the JSON summary and the exit code;
- :mod:`testbed.regress.search` -- the binary search over a series' prefixes against an oracle
  (pass, fail, flaky), and the culprit patch's subject and diff stat;
- :mod:`testbed.regress.runner` -- kernels (built or from the cache, counted) and the bounded
  ``testbed run`` children.
"""
