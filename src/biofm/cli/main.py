"""``biofm`` command line: one module per subcommand, each a thin call into the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from biofm._version import __version__

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func``.
# Building the parser imports no library code: ``register`` only declares arguments and each
# subcommand's ``run`` imports what it needs, so ``biofm --help`` starts fast.
SUBCOMMANDS = ("quickstart", "data", "train", "embed", "eval", "idr", "fid", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biofm",
        description="Channel-agnostic pretrained encoders for microscopy images.",
    )
    parser.add_argument("--version", action="version", version=f"biofm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"biofm.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from biofm.core.errors import BiofmError

    try:
        return int(args.func(args) or 0)
    except BiofmError as err:
        print(f"biofm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
