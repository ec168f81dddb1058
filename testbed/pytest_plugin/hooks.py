"""pytest hooks: options, report header and summary, console checks, artifact folders."""

from __future__ import annotations

import shutil
from collections.abc import Generator
from pathlib import Path

import pytest

from testbed.pytest_plugin import health, parallel
from testbed.pytest_plugin.settings import add_options, from_config
from testbed.pytest_plugin.state import ARTIFACTS, FACTS, FAILED, SessionFacts


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "console_allows(*problems): the guest console may show these testbed.guest.console."
        "Problem values without failing the test",
    )
    config.stash[FACTS] = SessionFacts()


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    parallel.mark_groups(config, items)  # before xdist reads the marks
    yield
    shard = from_config(config).shard
    if shard is not None:  # after -k and -m: shards split what is selected
        parallel.select(config, items, shard)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = from_config(config)
    kernel = str(settings.kernel_image) if settings.kernel_image else "Debian stock (cached)"
    accel = settings.accel.value if settings.accel else "per machine (auto: probe KVM, else TCG)"
    shard = f"; shard {settings.shard}" if settings.shard else ""
    return [
        f"testbed: kernel {kernel}; accel {accel}; machine {settings.machine}{shard}",
        f"testbed: artifacts in {settings.artifacts}"
        + (" (kept for every test)" if settings.keep_artifacts else " (kept for failures)"),
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        yield
    except BaseException:
        health.attach(item, health.watched(item))
        raise
    health.check(item, health.watched(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
        # a machine shared with other tests keeps its folder when one of its tests fails
        for entry in health.watched(item):
            if not entry.machine.run_dir.is_relative_to(item.stash.get(ARTIFACTS, Path("/-"))):
                item.config.stash[FACTS].kept.append(entry.machine.run_dir)
                report.sections.append(("testbed shared guest", str(entry.machine.run_dir)))
    folder = item.stash.get(ARTIFACTS, None)
    if folder is None:
        return report
    if report.failed:
        report.sections.append(("testbed artifacts", str(folder)))
    if report.when == "teardown":
        settings = from_config(item.config)
        if item.stash.get(FAILED, False) or settings.keep_artifacts:
            item.config.stash[FACTS].kept.append(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    facts = terminalreporter.config.stash.get(FACTS, None)
    if facts is None or not (facts.kernels or facts.kept or facts.p2p_paths):
        return
    write = terminalreporter.write_line
    terminalreporter.section("testbed")
    for kernel in sorted(facts.kernels):
        write(f"kernel: {kernel}")
    for accel in sorted(facts.accels):
        write(f"accel:  {accel}")
    for path in sorted(facts.p2p_paths):
        write(f"path: {path}")
    if facts.kept:
        write(f"artifacts kept for {len(facts.kept)} test(s), e.g. {facts.kept[0]}")
