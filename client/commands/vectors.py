"""``pushwire vectors``: print, check or regenerate the protocol test vectors.

The vectors are generated from the construct declarations (``pushwire.protocol.spec.vectors``);
the committed ``protocol/vectors.json`` and ``protocol/vectors.schema.json`` are their
rendering. ``--check`` is what CI and ``tests/spec/test_vectors.py`` run, so a layout change
without regenerated vectors fails loudly instead of shipping stale vectors to implementers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pushwire.protocol.spec import vectors

DESCRIPTION = """\
Print the pushwire test vectors generated from the construct declarations, check that the
committed vectors.json and vectors.schema.json match them, or regenerate both.
Exit status 1: --check found the committed files out of date.
"""
EPILOG = """\
examples:
  pushwire vectors > vectors.json     print the vectors (JSON) generated from the declarations
  pushwire vectors --schema           print their JSON Schema instead
  pushwire vectors --check            exit 1, with a summary, if the committed files are stale
  pushwire vectors --write            regenerate protocol/vectors.json and vectors.schema.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="compare the committed files with the declarations; exit 1 if they differ",
    )
    mode.add_argument(
        "--write", action="store_true", help="regenerate the committed files from the declarations"
    )
    mode.add_argument(
        "--schema", action="store_true", help="print the JSON Schema, not the vectors"
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=vectors.VECTORS_FILE,
        metavar="PATH",
        help="vectors file for --check/--write (default: the package's vectors.json)",
    )
    parser.add_argument(
        "--schema-file",
        type=Path,
        default=vectors.SCHEMA_FILE,
        metavar="PATH",
        help="schema file for --check/--write (default: the package's vectors.schema.json)",
    )


def _check_one(path: Path, expected_text: str, label: str) -> list[str]:
    """Problems with the committed ``path`` (empty when it is up to date)."""
    try:
        actual_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [f"{path}: cannot read ({exc.strerror or exc})"]
    if actual_text == expected_text:
        return []
    try:
        actual = json.loads(actual_text)
    except ValueError as exc:
        return [f"{path}: not valid JSON ({exc})"]
    expected = json.loads(expected_text)
    if actual == expected:
        return [f"{path}: same content, different formatting"]
    if label == "vectors":
        return [f"{path}: {line}" for line in vectors.diff(actual, expected)]
    keys = sorted(k for k in set(actual) | set(expected) if actual.get(k) != expected.get(k))
    return [f"{path}: differs in {', '.join(keys)}"]


def run(args: argparse.Namespace) -> int:
    document = vectors.generate()
    text, schema_text = vectors.render(document), vectors.render_schema()
    if args.write:
        args.file.write_text(text, encoding="utf-8")
        args.schema_file.write_text(schema_text, encoding="utf-8")
        print(f"wrote {args.file} and {args.schema_file}")
        return 0
    if args.check:
        problems = _check_one(args.file, text, "vectors")
        problems += _check_one(args.schema_file, schema_text, "schema")
        if problems:
            print("the committed vectors differ from the construct declarations:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            print("run 'pushwire vectors --write' to regenerate them", file=sys.stderr)
            return 1
        frames = document["frames"]
        kinds = {k: sum(v["kind"] == k for v in frames) for k in ("valid", "invalid", "ignored")}
        print(
            f"{args.file.name} is up to date: {len(frames)} frame vectors "
            f"({kinds['valid']} valid, {kinds['invalid']} invalid, {kinds['ignored']} ignored), "
            f"{len(document['prefaces'])} preface vectors, "
            f"{len(document['encoder_refusals'])} encoder refusals; {args.schema_file.name} too"
        )
        return 0
    sys.stdout.write(schema_text if args.schema else text)
    return 0
