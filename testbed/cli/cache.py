"""``testbed cache``: what the cache holds, and ``testbed cache prune`` of what went unused.

``testbed cache`` lists each kind of entry (built kernels, kernel build trees, sources, stock
kernels, guest modules, initramfs archives, guest tools) with its count, size and the oldest
last use; ``-l`` lists every entry. ``testbed cache prune --older-than DAYS`` removes entries
not used for DAYS days (default 30); ``--dry-run`` only says what it would remove. Everything
in the cache is rebuilt or fetched again on demand, so pruning loses time, never results.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "cache",
        help="show what ~/.cache/p2p-testbed holds; prune entries not used for a while",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-l", "--long", action="store_true", help="list every entry")
    csub = p.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")
    prune = csub.add_parser("prune", help="remove entries not used for DAYS days")
    prune.add_argument(
        "--older-than",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="last use older than this many days (default: 30; 0 removes every entry)",
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    prune.set_defaults(func=main_prune)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from testbed import cache, paths

    root = paths.cache_dir()
    now = time.time()
    entries = list(cache.scan(root))
    print(
        f"{root}: {cache.human(sum(e.size for e in entries))} in {len(entries)} entries "
        "(not counted: ccache, which bounds itself, and the current stock kernels)"
    )
    print(f"{'kind':<20} {'entries':>7} {'size':>10}  oldest last use")
    for kind, _rel, what in cache.KINDS:
        mine = [e for e in entries if e.kind == kind]
        oldest = f"{max(e.age_days(now) for e in mine):.1f} days ago" if mine else "-"
        size = cache.human(sum(e.size for e in mine))
        print(f"{kind:<20} {len(mine):>7} {size:>10}  {oldest}  ({what})")
        if args.long:
            for e in sorted(mine, key=lambda e: e.last_used):
                age = e.age_days(now)
                print(f"    {e.path.name:<28} {cache.human(e.size):>10}  used {age:.1f} days ago")
    return 0


def main_prune(args: argparse.Namespace) -> int:
    from testbed import cache, paths
    from testbed.errors import ConfigError

    if args.older_than < 0:
        raise ConfigError(f"--older-than {args.older_than}: must be 0 or more days")
    root = paths.cache_dir()
    now = time.time()
    doomed = cache.stale(cache.scan(root), args.older_than, now)
    verb = "would remove" if args.dry_run else "removed"
    for e in doomed:
        if not args.dry_run:
            cache.remove(e)
        age = e.age_days(now)
        print(f"{verb} {e.kind}: {e.path} ({cache.human(e.size)}, used {age:.1f} days ago)")
    total = cache.human(sum(e.size for e in doomed))
    print(
        f"{verb} {len(doomed)} entries, {total}; kept what was used in the last "
        f"{args.older_than:g} days"
    )
    return 0
