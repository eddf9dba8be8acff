"""Drive the reference client (``pushwire.client``) through a testserver scenario.

The testserver sees only the wire; what a client shows its *application* (a gap, an epoch
change, a terminal error) is stated per scenario in ``Scenario.app``. This module runs the
reference client against one scenario and records what the application saw, so the tests
can compare the two. It lives with the tests because the testserver must not import the
client it tests.
"""

from __future__ import annotations

from typing import Any

import trio

import pushwire.client as pw
from pushwire.server.testserver import ScenarioRun


async def drive_reference_client(
    address: str,
    run: ScenarioRun,
    *,
    credit: int = 64,
    limit: float = 30.0,
    topics: dict[str, list[tuple[Any, ...]]] | None = None,
) -> list[tuple[Any, ...]]:
    """Run ``pushwire.client`` through one scenario and return what it showed the
    application: ("msg", seq), ("gap", first, last), ("epoch",), ("error",). With
    ``topics``, the same items are also kept there per topic (a pattern scenario)."""
    scenario = run.scenario
    seen: list[tuple[Any, ...]] = []

    def record(topic: str, item: tuple[Any, ...]) -> None:
        seen.append(item)
        if topics is not None:
            topics.setdefault(topic, []).append(item)

    with trio.move_on_after(limit):
        async with trio.open_nursery() as nursery:

            async def stop_when_done() -> None:
                await run.done.wait()
                await trio.sleep(0.2)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_when_done)
            try:
                async with pw.connect(
                    address, client_name="pushwire-reference", backoff_initial=0.05, backoff_max=0.3
                ) as conn:
                    sub = conn.subscribe(
                        scenario.topic,
                        at_least_once=scenario.mode == "at-least-once",
                        credit=credit,
                    )
                    while True:
                        try:
                            msg = await sub.__anext__()
                        except pw.GapDetected as gap:
                            record(gap.topic, ("gap", gap.first, gap.last))
                            continue
                        except pw.EpochChanged as change:
                            record(change.topic, ("epoch",))
                            continue
                        except StopAsyncIteration:
                            break
                        record(msg.topic, ("msg", msg.seq))
            except pw.PushwireError:
                seen.append(("error",))
            await trio.sleep_forever()
    return seen


def app_matches(expected: list[tuple[Any, ...]], seen: list[tuple[Any, ...]]) -> bool:
    """The application saw ``expected`` in order; duplicates of messages (redelivery) and
    a trailing error after the expected ones are tolerated where expected allows them."""
    if not expected:
        return True
    dedup: list[tuple[Any, ...]] = []
    for item in seen:
        if item[0] == "msg" and dedup and dedup[-1] == item:
            continue
        dedup.append(item)
    return dedup[: len(expected)] == expected
