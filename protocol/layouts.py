"""construct declarations: the normative byte layouts of pushwire v1 (SPEC.md §3-§8).

Nothing else in the code base knows an offset. SPEC.md's byte tables are generated from
these declarations (``pushwire.protocol.spec.tables``) and a test checks that the committed
SPEC.md matches them; the hot-path codec in ``codec.py`` is proven byte-identical to them by
property tests.

Conventions (SPEC.md §3.2): every integer is big-endian (network order) and unsigned; text
is UTF-8 with a length prefix and no terminator; a body's trailing ``Terminated`` means the
declared frame length must be consumed exactly.

A body is parsed with the header's ``flags`` passed in as a parse parameter
(``Body.parse(data, flags=f)``), because some flags add fields (``HAS_HEADERS``).
"""

from __future__ import annotations

import enum

from construct import (
    Array,
    Bytes,
    Construct,
    GreedyBytes,
    If,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    PascalString,
    Pass,
    Prefixed,
    PrefixedArray,
    Struct,
    Switch,
    Terminated,
    this,
)

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
DEFAULT_PORT = 7447

# §2.2 connection preface ------------------------------------------------------------------
#: 0x89 catches 7-bit channels, "PW" names the protocol, 0x0A catches newline translation.
MAGIC = b"\x89PW\n"

#: Sent by the client first: the range of versions it speaks.
ClientPreface = Struct(
    "magic" / Bytes(len(MAGIC)),
    "min_version" / Int8ub,
    "max_version" / Int8ub,
    "reserved" / Int16ub,  # MUST be zero
)
#: The server's answer: the chosen version, or 0 when the ranges do not meet (then it closes).
ServerPreface = Struct(
    "magic" / Bytes(len(MAGIC)),
    "version" / Int8ub,
    "max_version" / Int8ub,  # the highest version the server speaks, as a hint
    "reserved" / Int16ub,  # MUST be zero
)
PREFACE_SIZE: int = ClientPreface.sizeof()
assert ServerPreface.sizeof() == PREFACE_SIZE

# §3.1 frame header ------------------------------------------------------------------------
Header = Struct(
    "length" / Int32ub,  # payload bytes after the header
    "type" / Int8ub,  # bit 7: ignorable when unknown (§3.3)
    "flags" / Int8ub,  # per-type; undefined bits MUST be zero
)
HEADER_SIZE: int = Header.sizeof()

#: Bit 7 of the frame type: an unknown type with this bit set is skipped, without it fatal.
IGNORABLE_BIT = 0x80

#: Every frame a receiver MUST accept before limits are exchanged fits in this (§3.4).
INITIAL_MAX_FRAME_SIZE = 16384
#: Bounds on the max_frame_size a peer may advertise (§3.4). 2**24 keeps one frame from
#: tying up more than 16 MiB of a receiver's memory.
MIN_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = 1 << 24


class FrameType(enum.IntEnum):
    """Frame type registry (SPEC.md §3.3). v1 defines no ignorable type."""

    HELLO = 0x01  # §5.1
    WELCOME = 0x02  # §5.2
    PING = 0x03  # §8.5
    PONG = 0x04  # §8.5
    GOAWAY = 0x05  # §8.6
    ERROR = 0x06  # §8.7
    SUBSCRIBE = 0x10  # §6.1
    SUBSCRIBED = 0x11  # §6.2
    UNSUBSCRIBE = 0x12  # §6.3
    UNSUBSCRIBED = 0x13  # §6.4
    CREDIT = 0x14  # §8.1
    ACK = 0x15  # §8.3
    GAP = 0x16  # §7.4
    MESSAGE = 0x20  # §7.1
    MESSAGE_BATCH = 0x21  # §7.2
    PUBLISH = 0x22  # §7.5
    PUBLISH_BATCH = 0x23  # §7.6
    PUBACK = 0x24  # §7.7


#: MESSAGE, MESSAGE_BATCH, PUBLISH, PUBLISH_BATCH: header blocks are present (§9.2).
HAS_HEADERS = 0x01
#: SUBSCRIBE: at-least-once delivery with cumulative acks and redelivery (§8.3).
AT_LEAST_ONCE = 0x01
#: SUBSCRIBE: the topic field is a pattern (§6.7, §9.4) and a positions list follows it.
PATTERN = 0x02
#: SUBSCRIBED: the reply is about one topic of a pattern subscription; a topic field
#: follows (§6.7).
TOPIC_STATUS = 0x01


#: Flag bits each type defines; any other bit set is RESERVED_BITS_SET (§3.2).
DEFINED_FLAGS: dict[FrameType, int] = {t: 0 for t in FrameType} | {
    FrameType.MESSAGE: HAS_HEADERS,
    FrameType.MESSAGE_BATCH: HAS_HEADERS,
    FrameType.PUBLISH: HAS_HEADERS,
    FrameType.PUBLISH_BATCH: HAS_HEADERS,
    FrameType.SUBSCRIBE: AT_LEAST_ONCE | PATTERN,
    FrameType.SUBSCRIBED: TOPIC_STATUS,
}


#: Flag combinations each of whose bits is defined but that v1 does not allow together; a
#: frame carrying one is FIELD_OUT_OF_RANGE (§3.5 step 3). Pattern subscriptions have no
#: acknowledgements (§6.7).
EXCLUDED_FLAGS: dict[FrameType, frozenset[int]] = {
    FrameType.SUBSCRIBE: frozenset({AT_LEAST_ONCE | PATTERN}),
}


class SinceKind(enum.IntEnum):
    """Where a subscription starts (SPEC.md §6.1)."""

    NEW = 0  # only messages published after the subscription
    AFTER = 1  # messages after (epoch, seq)
    LAST = 2  # the last N messages, then live
    OLDEST = 3  # everything retained, then live


class Outcome(enum.IntEnum):
    """The one outcome a SUBSCRIBED reply states (SPEC.md §6.2)."""

    NEW = 0  # live from start_seq; no position was asked for
    RECOVERED = 1  # every message after the position follows, in order
    GAP = 2  # messages gap.first..gap.last are lost; delivery resumes at start_seq
    EPOCH_CHANGED = 3  # the position's epoch is not the topic's; delivery restarts in the new epoch


class SlowConsumerPolicy(enum.IntEnum):
    """What the server does to a subscriber that falls behind (SPEC.md §8.2)."""

    DISCONNECT = 0  # close with SLOW_CONSUMER once lag exceeds max_lag
    DROP = 1  # skip ahead, telling the subscriber with GAP(reason SLOW_CONSUMER)


# §3.2 field types --------------------------------------------------------------------------
Str8 = PascalString(Int8ub, "utf8")  # 0-255 bytes of UTF-8
Text16 = PascalString(Int16ub, "utf8")  # 0-65535 bytes of UTF-8
Bytes16 = Prefixed(Int16ub, GreedyBytes)
Topic = Str8  # syntax rules in §9.1 are checked above the codec

#: §9.2 message headers: u8 count, then key (Str8) / value (Bytes16) pairs.
HeaderBlock = PrefixedArray(Int8ub, Struct("key" / Str8, "value" / Bytes16))

_has_headers = this._params.flags & HAS_HEADERS

#: §7.2 one record of a batch. PUBLISH_BATCH and MESSAGE_BATCH share it byte for byte, so
#: a server forwards a publish batch without touching its records.
Record = Struct(
    "headers" / If(_has_headers, HeaderBlock),
    "payload" / Prefixed(Int32ub, GreedyBytes),
)

# §5 handshake ------------------------------------------------------------------------------
Hello = Struct(
    "max_frame_size" / Int32ub,
    "heartbeat_ms" / Int32ub,
    "client_name" / Str8,
    "auth_token" / Bytes16,
    Terminated,
)
Welcome = Struct(
    "connection_id" / Int64ub,
    "heartbeat_ms" / Int32ub,
    "max_frame_size" / Int32ub,
    "max_subscriptions" / Int32ub,
    "max_lag" / Int32ub,
    "slow_consumer_policy" / Int8ub,
    "server_name" / Str8,
    Terminated,
)

# §8.5-§8.7 connection management -----------------------------------------------------------
Ping = Struct("opaque" / Int64ub, Terminated)
Pong = Struct("opaque" / Int64ub, Terminated)
Position = Struct("sub_id" / Int32ub, "epoch" / Int64ub, "seq" / Int64ub)
POSITION_SIZE: int = Position.sizeof()  # one entry of GOAWAY.positions
Goaway = Struct(
    "code" / Int16ub,
    "reconnect_after_ms" / Int32ub,
    "reconnect_jitter_ms" / Int32ub,
    "positions" / PrefixedArray(Int16ub, Position),
    "reason" / Text16,
    Terminated,
)
Error = Struct(
    "code" / Int16ub,
    "request_type" / Int8ub,  # frame type of the failed request; 0 = connection error
    "request_id" / Int32ub,  # sub_id or request_id of that request; 0 for connection errors
    "message" / Text16,
    Terminated,
)

# §6 subscriptions --------------------------------------------------------------------------
#: §6.7 one entry of a pattern SUBSCRIBE's positions: the last message the client has of
#: one topic the pattern matches.
TopicPosition = Struct("topic" / Topic, "epoch" / Int64ub, "seq" / Int64ub)
Subscribe = Struct(
    "sub_id" / Int32ub,
    "initial_credit" / Int32ub,
    "since_kind" / Int8ub,
    "since"
    / Switch(
        this.since_kind,
        {
            SinceKind.AFTER: Struct("epoch" / Int64ub, "seq" / Int64ub),
            SinceKind.LAST: Struct("count" / Int32ub),
        },
        default=Pass,
    ),
    "topic" / Topic,
    "positions" / If(this._params.flags & PATTERN, PrefixedArray(Int16ub, TopicPosition)),
    Terminated,
)
GapRange = Struct("first" / Int64ub, "last" / Int64ub, "reason" / Int16ub)
Subscribed = Struct(
    "sub_id" / Int32ub,
    "outcome" / Int8ub,
    "epoch" / Int64ub,
    "start_seq" / Int64ub,
    "head_seq" / Int64ub,
    "gap" / If(this.outcome == Outcome.GAP, GapRange),
    "topic" / If(this._params.flags & TOPIC_STATUS, Topic),
    Terminated,
)
Unsubscribe = Struct("sub_id" / Int32ub, Terminated)
Unsubscribed = Struct("sub_id" / Int32ub, "epoch" / Int64ub, "last_seq" / Int64ub, Terminated)

# §8.1-§8.3 flow control and acknowledgement ------------------------------------------------
Credit = Struct("sub_id" / Int32ub, "increment" / Int32ub, Terminated)
Ack = Struct("sub_id" / Int32ub, "seq" / Int64ub, Terminated)
Gap = Struct(
    "sub_id" / Int32ub,
    "epoch" / Int64ub,
    "first" / Int64ub,
    "last" / Int64ub,
    "reason" / Int16ub,
    Terminated,
)

# §7 messages -------------------------------------------------------------------------------
# MESSAGE = epoch + seq + (the PUBLISH body after request_id); likewise for batches. The
# server turns a publish into a push by swapping that 4-byte prefix for 16 bytes.
Message = Struct(
    "epoch" / Int64ub,
    "seq" / Int64ub,
    "topic" / Topic,
    "headers" / If(_has_headers, HeaderBlock),
    "payload" / GreedyBytes,
)
MessageBatch = Struct(
    "epoch" / Int64ub,
    "base_seq" / Int64ub,  # record i carries sequence base_seq + i
    "topic" / Topic,
    "count" / Int16ub,  # 1-65535
    "records" / Array(this.count, Record),
    Terminated,
)
Publish = Struct(
    "request_id" / Int32ub,  # 0: no PUBACK wanted
    "topic" / Topic,
    "headers" / If(_has_headers, HeaderBlock),
    "payload" / GreedyBytes,
)
PublishBatch = Struct(
    "request_id" / Int32ub,
    "topic" / Topic,
    "count" / Int16ub,
    "records" / Array(this.count, Record),
    Terminated,
)
Puback = Struct(
    "request_id" / Int32ub,
    "epoch" / Int64ub,
    "first_seq" / Int64ub,
    "count" / Int16ub,
    Terminated,
)

BODIES: dict[FrameType, Construct] = {
    FrameType.HELLO: Hello,
    FrameType.WELCOME: Welcome,
    FrameType.PING: Ping,
    FrameType.PONG: Pong,
    FrameType.GOAWAY: Goaway,
    FrameType.ERROR: Error,
    FrameType.SUBSCRIBE: Subscribe,
    FrameType.SUBSCRIBED: Subscribed,
    FrameType.UNSUBSCRIBE: Unsubscribe,
    FrameType.UNSUBSCRIBED: Unsubscribed,
    FrameType.CREDIT: Credit,
    FrameType.ACK: Ack,
    FrameType.GAP: Gap,
    FrameType.MESSAGE: Message,
    FrameType.MESSAGE_BATCH: MessageBatch,
    FrameType.PUBLISH: Publish,
    FrameType.PUBLISH_BATCH: PublishBatch,
    FrameType.PUBACK: Puback,
}

#: Which role may send each type (SPEC.md §3.3); receiving one the other way is
#: UNEXPECTED_FRAME.
CLIENT_SENDS = frozenset(
    {
        FrameType.HELLO,
        FrameType.PING,
        FrameType.PONG,
        FrameType.GOAWAY,
        FrameType.ERROR,
        FrameType.SUBSCRIBE,
        FrameType.UNSUBSCRIBE,
        FrameType.CREDIT,
        FrameType.ACK,
        FrameType.PUBLISH,
        FrameType.PUBLISH_BATCH,
    }
)
SERVER_SENDS = frozenset(
    {
        FrameType.WELCOME,
        FrameType.PING,
        FrameType.PONG,
        FrameType.GOAWAY,
        FrameType.ERROR,
        FrameType.SUBSCRIBED,
        FrameType.UNSUBSCRIBED,
        FrameType.GAP,
        FrameType.MESSAGE,
        FrameType.MESSAGE_BATCH,
        FrameType.PUBACK,
    }
)

# Compile-time sizes other modules use (derived, never typed twice).
MESSAGE_PREFIX_SIZE: int = Int64ub.sizeof() * 2  # epoch + seq (or base_seq)
PUBLISH_PREFIX_SIZE: int = Int32ub.sizeof()  # request_id
