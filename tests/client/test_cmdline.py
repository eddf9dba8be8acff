"""The connection options ``pushwire sub`` and ``pub`` share: a ``--server`` address that
cannot be meant as written is a one-line usage error (exit 2) before any connection
attempt, never a silent default."""

from __future__ import annotations

import pytest

from pushwire.client import parse_address
from pushwire.client.commands import cli
from pushwire.client.commands.cmdline import EXIT_USAGE


@pytest.mark.parametrize(
    ("address", "complaint"),
    [
        ("example.org:", "has no port after the ':'"),
        ("[::1]:", "has no port after the ':'"),
        ("tls://example.org:", "has no port after the ':'"),
        (":7447", "has no host"),
        ("example.org:http", "is not a number"),
    ],
)
@pytest.mark.parametrize("command", [["sub", "t"], ["pub", "t", "m"]])
def test_a_server_address_with_a_missing_part_is_a_one_line_usage_error(
    command: list[str], address: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*command, "--server", address, "--no-reconnect"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"pushwire: error: --server: address {address.split('//')[-1]!r}")
    assert complaint in err


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("example.org", ("example.org", 7447)),
        ("[::1]", ("::1", 7447)),
        ("example.org:9000", ("example.org", 9000)),
    ],
)
def test_only_a_missing_port_with_its_colon_means_the_default_port(
    address: str, expected: tuple[str, int]
) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["example.org:", "[::1]:", ":7447", ":"])
def test_parse_address_refuses_an_empty_host_or_port(address: str) -> None:
    with pytest.raises(ValueError, match="has no"):
        parse_address(address)


def test_a_command_is_named_after_itself_in_hello_by_default() -> None:
    from importlib.metadata import version

    from pushwire.client.commands.cmdline import connect_options

    parser = cli.build_parser(only="sub")
    args = parser.parse_args(["sub", "t", "--server", "example.org:1"])
    assert connect_options(args)["client_name"] == f"pushwire-sub/{version('pushwire')}"
    assert connect_options(args, "pub")["client_name"] == f"pushwire-pub/{version('pushwire')}"
    named = parser.parse_args(["sub", "t", "--name", "mine"])
    assert connect_options(named)["client_name"] == "mine"
