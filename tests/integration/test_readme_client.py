"""README's client examples, run as written against a real server (``pushwire serve`` in a
subprocess; only the address is changed to the server's ephemeral port)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from integration.cli_support import serve

import pushwire.client as pw

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:7447"

#: Per example, by its last line: what is published before it starts, and the line it
#: prints for it.
EXPECTED = {
    "trio.run(main)": ([], "prices/eur 1 b'1.0843'"),
    "asyncio.run(main())": ([("jobs", b"resize 7")], "done 1 b'resize 7'"),
}


def client_examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    return [block for block in blocks if "import pushwire.client" in block]


def test_readme_has_the_trio_and_the_asyncio_example() -> None:
    assert sorted(block.strip().splitlines()[-1] for block in client_examples()) == sorted(EXPECTED)


@pytest.mark.parametrize(
    "example", client_examples(), ids=lambda block: block.strip().splitlines()[-1]
)
async def test_readme_example_runs_as_written(example: str) -> None:
    publishes, expected = EXPECTED[example.strip().splitlines()[-1]]
    assert README_ADDRESS in example
    with trio.fail_after(30):
        async with serve() as address:
            async with pw.connect(address) as conn:
                for topic, payload in publishes:
                    await conn.publish(topic, payload)
            code = example.replace(README_ADDRESS, address)
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                assert proc.stdout is not None
                out = b""
                while b"\n" not in out:  # the example runs until it is stopped
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        assert proc.stderr is not None
                        errors = await proc.stderr.receive_some(65536)
                        pytest.fail(f"the example ended: {errors.decode()}")
                    out += chunk
            finally:
                proc.kill()
                await proc.wait()
    assert out.decode().splitlines()[0] == expected
