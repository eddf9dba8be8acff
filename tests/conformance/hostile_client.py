"""A raw pushwire client for ``pushwire testserver --hostile``, with one mistake chosen on
the command line: ``python hostile_client.py MISTAKE ADDRESS TOPIC``.

It handshakes, subscribes, prints one JSON line per message (as ``pushwire sub --format
json`` does) and answers a bad frame with ERROR(code) and a close. The mistakes:

* ``none``: the correct behaviour;
* ``drop-read``: messages decoded from the same read as a bad frame are thrown away (a real
  bug of a client the kit was tried on);
* ``wrong-code``: every bad frame is reported as MALFORMED_FRAME;
* ``silent``: closes without an ERROR.
"""

from __future__ import annotations

import json
import socket
import sys

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import INITIAL_MAX_FRAME_SIZE, PREFACE_SIZE


def main(mistake: str, address: str, topic: str) -> None:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    hello = F.Hello(INITIAL_MAX_FRAME_SIZE, 0, "hostile-test-client", b"")
    sock.sendall(encode_preface(1, 1) + codec.encode_frame(hello))
    decoder = FrameDecoder(INITIAL_MAX_FRAME_SIZE)
    preface = b""
    subscribed = False
    while True:
        data = received = sock.recv(65536)
        if len(preface) < PREFACE_SIZE:
            take = PREFACE_SIZE - len(preface)
            preface, data = preface + data[:take], data[take:]
        if data or not received:
            decoder.feed(data)  # b"" is EOF
        lines: list[str] = []
        try:
            while (frame := decoder.next_frame()) is not None:
                if isinstance(frame, F.Welcome) and not subscribed:
                    subscribed = True
                    sock.sendall(
                        codec.encode_frame(F.Subscribe(sub_id=1, topic=topic, initial_credit=64))
                    )
                elif isinstance(frame, F.Message):
                    lines.append(json.dumps({"event": "message", "seq": frame.seq}))
                    if mistake != "drop-read":
                        print(lines.pop(), flush=True)
        except RemoteProtocolError as exc:
            if mistake == "drop-read":
                lines.clear()
            code = ErrorCode.MALFORMED_FRAME if mistake == "wrong-code" else exc.code
            if mistake != "silent":
                sock.sendall(codec.encode_frame(F.Error(int(code), 0, 0, str(exc)[:100])))
            sock.close()
            return
        for line in lines:
            print(line, flush=True)
        if not received:
            sock.close()
            return


if __name__ == "__main__":
    main(*sys.argv[1:4])
