"""KTAP and TAP: the text kselftests and KUnit print, read into frozen dataclasses and written.

:func:`parse` reads TAP 13 and KTAP v1 (nesting by indentation, ``# SKIP``, diagnostics, bail
out) and reports honestly what a stream got wrong -- results missing against the plan after a
crash, a truncated last line, duplicated or out-of-order numbers -- instead of raising;
:func:`dump` writes a :class:`Suite` as KTAP v1 (``testbed run --ktap FILE``). Our own code:
PyPI has no KTAP parser that handles nesting, and the kernel's ``kunit_parser.py`` is GPL.
"""

from testbed.ktap.model import DIRECTIVES, Case, Problem, Status, Suite, status_of
from testbed.ktap.parser import parse
from testbed.ktap.writer import dump

__all__ = ["DIRECTIVES", "Case", "Problem", "Status", "Suite", "dump", "parse", "status_of"]
