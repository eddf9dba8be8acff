"""A raw pattern-subscribing client for the test server's pattern scenarios, with one
mistake chosen on the command line: ``python pattern_client.py MISTAKE ADDRESS PATTERN``.

It handshakes, subscribes to PATTERN with flag PATTERN, answers PINGs, grants credit as it
prints, prints the client output contract (one JSON line per message, gap and epoch change,
each naming its topic) and checks each topic's sequences; when a connection ends it
reconnects and resubscribes with the position of every topic it has seen. A hole makes it
send ERROR(PROTOCOL_ERROR) and exit. The mistakes:

* ``none``: the correct behaviour;
* ``no-pattern-flag``: the SUBSCRIBE names the pattern without flag PATTERN;
* ``one-counter``: contiguity is checked per subscription, not per topic;
* ``no-check``: contiguity is not checked at all;
* ``no-positions``: a resubscription lists no positions;
* ``silent-status``: a TOPIC_STATUS gap or epoch change is not told to the application.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import INITIAL_MAX_FRAME_SIZE, PREFACE_SIZE, Outcome

CREDIT = 16


def say(**line: object) -> None:
    print(json.dumps(line), flush=True)


def session(mistake: str, address: str, pattern: str, seen: dict[str, list[int]]) -> bool:
    """One connection; True to reconnect, False when this client is done for good."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    hello = F.Hello(INITIAL_MAX_FRAME_SIZE, 0, "pattern-test-client", b"")
    sock.sendall(encode_preface(1, 1) + codec.encode_frame(hello))
    decoder = FrameDecoder(INITIAL_MAX_FRAME_SIZE)
    preface = b""
    consumed = 0
    last_any = 0  # the one-counter mistake's single expected sequence
    try:
        while True:
            data = received = sock.recv(65536)
            if len(preface) < PREFACE_SIZE:
                take = PREFACE_SIZE - len(preface)
                preface, data = preface + data[:take], data[take:]
            if not received:
                return True
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                out: list[F.Frame] = []
                if isinstance(frame, F.Welcome):
                    positions: tuple[F.TopicPosition, ...] | None = tuple(
                        F.TopicPosition(t, e, s) for t, (e, s) in seen.items()
                    )
                    if mistake == "no-pattern-flag":
                        positions = None
                    elif mistake == "no-positions":
                        positions = ()
                    out.append(F.Subscribe(1, pattern, initial_credit=CREDIT, positions=positions))
                elif isinstance(frame, F.Ping):
                    out.append(F.Pong(frame.opaque))
                elif isinstance(frame, F.Subscribed) and frame.topic is not None:
                    topic, outcome = frame.topic, Outcome(frame.outcome)
                    if mistake != "silent-status" and outcome is Outcome.GAP:
                        say(event="gap", topic=topic, first=frame.gap_first, last=frame.gap_last)
                    if mistake != "silent-status" and outcome is Outcome.EPOCH_CHANGED:
                        say(event="epoch_changed", topic=topic, epoch=frame.epoch)
                    seen[topic] = [frame.epoch, frame.start_seq - 1]
                elif isinstance(frame, F.Message):
                    topic, epoch, seq = frame.topic, frame.epoch, frame.seq
                    if mistake == "one-counter":
                        expected = last_any + 1
                    else:
                        expected = seen[topic][1] + 1 if topic in seen else seq
                    if mistake != "no-check" and seq != expected:
                        error = F.Error(ErrorCode.PROTOCOL_ERROR, 0, 0, f"{topic} {seq}")
                        sock.sendall(codec.encode_frame(error))
                        return False
                    last_any = seq
                    seen[topic] = [epoch, seq]
                    say(event="message", topic=topic, epoch=epoch, seq=seq)
                    consumed += 1
                    if consumed == CREDIT // 2:
                        out.append(F.Credit(1, consumed))
                        consumed = 0
                elif isinstance(frame, F.Error | F.Goaway):
                    return True
                if out:
                    sock.sendall(b"".join(codec.encode_frame(f) for f in out))
    except OSError:
        return True
    finally:
        sock.close()


def main(mistake: str, address: str, pattern: str) -> int:
    seen: dict[str, list[int]] = {}
    while session(mistake, address, pattern, seen):
        time.sleep(0.1)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
