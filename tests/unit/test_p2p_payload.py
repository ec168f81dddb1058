"""Which path the loaded P2P drivers use (testbed.p2p.payload.driver_path), through a fake shell."""

from __future__ import annotations

import pytest

from testbed.errors import GuestError
from testbed.guest.ssh import COMMAND_TIMEOUT, CommandResult, GuestShell
from testbed.p2p.payload import driver_path


class CatShell(GuestShell):
    """Answers the one ``cat`` of both ``path`` parameters with ``stdout``."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    def run(
        self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None
    ) -> CommandResult:
        assert command.startswith("cat ") and command.count("/parameters/path") == 2, command
        return CommandResult(command, 0, self.stdout, "", 0.0)


@pytest.mark.parametrize("path", ["vm_ops", "compat"])
def test_both_drivers_agree(path: str) -> None:
    assert driver_path(CatShell(f"{path}\n{path}\n")) == path


@pytest.mark.parametrize("stdout", ["vm_ops\ncompat\n", "vm_ops\n", "hmm\nhmm\n", ""])
def test_disagreement_or_an_unknown_path_is_an_error_naming_the_fix(stdout: str) -> None:
    with pytest.raises(GuestError, match="rebuild them"):
        driver_path(CatShell(stdout))
