"""The normative requirements of SPEC.md as data: one row per requirement ID.

SPEC.md carries every ID in brackets next to the sentence that states it; this table is the
machine-readable side of the same list. ``tests/spec/test_requirements.py`` keeps the two
equal, checks that every ``PW-…`` ID cited in code and tests exists here, and lists the MUSTs
that no test claims to prove (``@pytest.mark.spec("PW-…")``). SPEC.md's Appendix A is
generated from this table (``pushwire.protocol.spec.tables``).

IDs are stable: an ID is never renumbered or reused. A requirement that is dropped moves to
:data:`RETIRED` and its number stays taken. New requirements get the next free number of
their prefix, wherever they sit in SPEC.md.

``observable`` answers one question: can the *peer* see a violation on the wire (a frame it
should not get, a missing reply, a wrong close)? Those are the requirements a conformance
suite or a scripted test peer can check from outside; the others (memory bounds, logging,
what a client tells its application) need a look inside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Level = Literal["MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY"]
Role = Literal["client", "server", "both"]

#: Prefixes in SPEC.md order; each names the topic of its requirements.
PREFIXES: tuple[str, ...] = (
    "TRANSPORT",  # §2.1 TCP, TLS
    "PREFACE",  # §2.2-§2.4 connection preface, version negotiation
    "FRAME",  # §3 framing
    "HS",  # §5 handshake
    "SUB",  # §6 subscriptions
    "ORDER",  # §6.5, §7.3 epochs, sequences, ordering, contiguity
    "RESUME",  # §6.6 resuming a subscription
    "PUB",  # §7 messages and publishing
    "ACK",  # §8.3 acknowledgements
    "FLOW",  # §8.1 credit
    "SLOW",  # §8.2 slow consumers
    "HB",  # §8.5 heartbeats
    "GOAWAY",  # §8.6 graceful shutdown
    "ERR",  # §8.7-§8.8 errors and reconnection
    "CLIENT",  # §8.9 client behaviour over time
    "TOPIC",  # §9 topic names and headers
    "LIMIT",  # §13 resource limits
    "SEC",  # §12 security
    "NODE",  # §15 several server nodes on one shared history
)

#: A well-formed requirement ID. Numbers start at 1 and have no leading zero.
ID_RE = re.compile(r"PW-(?:" + "|".join(PREFIXES) + r")-[1-9][0-9]*")
#: Anything that looks like an attempt at an ID (used to find unknown or malformed ones).
ID_LIKE_RE = re.compile(r"\bPW-[A-Z]+-[0-9]+\b")

LEVELS: tuple[Level, ...] = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")


@dataclass(frozen=True, slots=True)
class Requirement:
    id: str
    level: Level
    section: str  # SPEC.md section that states it, e.g. "3.4"
    applies_to: Role  # who must do it
    observable: bool  # can the peer see a violation on the wire?
    text: str  # one-line summary; SPEC.md has the full sentence

    @property
    def prefix(self) -> str:
        return self.id.split("-")[1]

    @property
    def number(self) -> int:
        return int(self.id.split("-")[2])

    @property
    def is_must(self) -> bool:
        return self.level in ("MUST", "MUST NOT")


R = Requirement

REQUIREMENTS: tuple[Requirement, ...] = (
    # §2.1 transport -------------------------------------------------------------------------
    R("PW-TRANSPORT-1", "MUST", "2.1", "both", False,
      "Run over TCP (optionally inside TLS); the stream carries nothing but the two prefaces "
      "and frames."),
    R("PW-TRANSPORT-2", "SHOULD", "2.1", "both", False,
      "Use port 7447 when no port is configured."),
    R("PW-TRANSPORT-3", "MUST", "2.1", "both", False,
      "With TLS, the TLS session wraps the whole stream from the first preface byte; there is "
      "no in-band upgrade."),
    R("PW-TRANSPORT-4", "MUST", "2.1", "client", False,
      "A TLS client verifies the server certificate against the server name unless "
      "explicitly configured not to."),
    R("PW-TRANSPORT-5", "MUST NOT", "2.1", "both", False,
      "Negotiate a TLS version below 1.2."),
    R("PW-TRANSPORT-6", "SHOULD", "2.1", "both", False,
      "Prefer TLS 1.3."),
    R("PW-TRANSPORT-7", "SHOULD", "2.1", "both", False,
      "Disable Nagle's algorithm (TCP_NODELAY); writers coalesce frames themselves."),
    # §2.2-§2.4 preface ----------------------------------------------------------------------
    R("PW-PREFACE-1", "MUST", "2.4", "both", True,
      "A preface whose first four bytes are not the magic is BAD_PREFACE: close without "
      "sending anything more."),
    R("PW-PREFACE-2", "MUST", "2.2", "both", True,
      "The preface reserved u16 is sent as zero; a non-zero value is RESERVED_BITS_SET and "
      "the receiver closes."),
    R("PW-PREFACE-3", "MUST", "2.2", "client", True,
      "The client preface is the first thing the client sends."),
    R("PW-PREFACE-4", "MUST", "2.2", "server", True,
      "The server sends nothing before it has the whole client preface, and then sends its "
      "own preface first."),
    R("PW-PREFACE-5", "MUST", "2.3", "client", True,
      "The client preface has 1 <= min_version <= max_version."),
    R("PW-PREFACE-6", "MUST", "2.3", "server", True,
      "The server answers with the highest version in both ranges; with none, it answers "
      "version 0 and closes (UNSUPPORTED_VERSION) without sending a frame."),
    R("PW-PREFACE-7", "MUST", "2.3", "client", True,
      "A server preface with version 0 or outside the client's range is UNSUPPORTED_VERSION: "
      "the client closes without sending anything more."),
    R("PW-PREFACE-8", "MAY", "2.2", "client", True,
      "The client may send HELLO right after its preface, without waiting for the server's."),
    R("PW-PREFACE-9", "MUST NOT", "2.3", "server", True,
      "The server does not interpret bytes after the client preface before it has chosen a "
      "version."),
    # §3 framing -----------------------------------------------------------------------------
    R("PW-FRAME-1", "MUST", "3.1", "both", True,
      "A frame is the 6-byte header followed by exactly `length` payload bytes; frames follow "
      "each other with nothing in between."),
    R("PW-FRAME-2", "MUST", "3.4", "both", True,
      "A length above the receiver's limit is FRAME_TOO_LARGE, decided from the header alone "
      "before any payload byte is read or buffered."),
    R("PW-FRAME-3", "MUST", "3.2", "both", True,
      "Flag bits the frame type does not define are sent as zero; a set one is "
      "RESERVED_BITS_SET."),
    R("PW-FRAME-4", "MUST", "3.5", "both", True,
      "The payload matches the layout exactly: a truncated field, trailing bytes, or a stream "
      "that ends inside a frame (its header, or the payload of a frame whose header passes "
      "the header checks) is MALFORMED_FRAME."),
    R("PW-FRAME-5", "MUST", "3.3", "both", True,
      "An unknown frame type with the ignorable bit (0x80) clear is UNKNOWN_FRAME_TYPE."),
    R("PW-FRAME-6", "MUST", "3.2", "both", True,
      "Text fields are valid UTF-8; anything else is INVALID_UTF8."),
    R("PW-FRAME-7", "MUST", "3.5", "both", True,
      "A field outside its range or enumeration (table of §3.5) is FIELD_OUT_OF_RANGE."),
    R("PW-FRAME-8", "MUST", "3.3", "both", True,
      "An unknown frame type with the ignorable bit set is skipped (its payload discarded, its "
      "flags not examined) without error."),
    R("PW-FRAME-9", "MUST NOT", "3.4", "both", True,
      "Never send a frame longer than the limit the peer advertised (16384 before it has "
      "advertised one)."),
    R("PW-FRAME-10", "MUST", "3.4", "both", True,
      "A receiver enforces 16384 until it has advertised its own limit, then the limit it "
      "advertised."),
    R("PW-FRAME-11", "MUST", "3.2", "both", True,
      "Integers are unsigned and big-endian; strings carry a length prefix and no "
      "terminator."),
    R("PW-FRAME-12", "MUST NOT", "3.3", "both", True,
      "Never send a frame type that the sender's role does not send (§3.3 table)."),
    R("PW-FRAME-13", "MUST", "3.3", "both", True,
      "A known frame type the receiver's role never receives is UNEXPECTED_FRAME."),
    R("PW-FRAME-14", "MUST", "3.5", "both", True,
      "When a frame breaks several rules, report the code of the first failing check in the "
      "order of §3.5; a stream that ends inside a frame whose whole header fails a header "
      "check gets that check's code, and a cut-short payload is not examined."),
    R("PW-FRAME-15", "MAY", "3.3", "both", True,
      "Extension frames with the ignorable bit set may be sent; a peer that does not know them "
      "skips them."),
    R("PW-FRAME-16", "MUST NOT", "3.5", "both", True,
      "Never send a frame that breaks a layout, a length prefix or a range of §3."),
    R("PW-FRAME-17", "MUST", "3.5", "both", True,
      "An out-of-range since_kind or outcome selects no optional fields: parse the rest "
      "(leftover bytes are MALFORMED_FRAME), then report FIELD_OUT_OF_RANGE."),
    # §5 handshake ---------------------------------------------------------------------------
    R("PW-HS-1", "MUST", "5.4", "client", True,
      "The client's first frame is HELLO."),
    R("PW-HS-2", "MUST", "5.4", "server", True,
      "The server's first frame is WELCOME, or a connection-level ERROR followed by close."),
    R("PW-HS-3", "MUST", "5.4", "both", True,
      "Before the handshake completes, any frame other than the expected one is "
      "UNEXPECTED_FRAME."),
    R("PW-HS-4", "MUST", "5.1", "client", True,
      "HELLO.max_frame_size is in 16384..16777216."),
    R("PW-HS-5", "MUST", "5.1", "server", True,
      "A HELLO.max_frame_size outside 16384..16777216 is FIELD_OUT_OF_RANGE."),
    R("PW-HS-6", "MUST", "5.2", "server", True,
      "WELCOME.max_frame_size is in 16384..16777216."),
    R("PW-HS-7", "MUST", "5.2", "client", True,
      "A WELCOME.max_frame_size or heartbeat_ms outside its range is FIELD_OUT_OF_RANGE."),
    R("PW-HS-8", "MUST", "5.2", "server", True,
      "WELCOME.heartbeat_ms is in 1..600000."),
    R("PW-HS-9", "SHOULD", "5.2", "server", True,
      "heartbeat_ms is HELLO.heartbeat_ms (or the server default when 0) clamped to "
      "1000..60000."),
    R("PW-HS-10", "MUST", "5.2", "server", True,
      "The limits and policy in WELCOME hold unchanged for the whole connection."),
    R("PW-HS-11", "MUST", "5.3", "server", True,
      "When authentication is required and the token is missing or not accepted: "
      "ERROR(UNAUTHENTICATED) and close, never WELCOME."),
    R("PW-HS-12", "MUST", "5.3", "server", True,
      "A server at its connection limit answers ERROR(TOO_MANY_CONNECTIONS) and closes."),
    R("PW-HS-13", "MAY", "5.3", "server", True,
      "Admission errors may be sent right after the server preface, before HELLO is read."),
    R("PW-HS-14", "MUST", "5.4", "server", True,
      "No complete HELLO within the handshake timeout (from accept): ERROR(HANDSHAKE_TIMEOUT) "
      "when the prefaces were exchanged, then close."),
    R("PW-HS-15", "SHOULD", "5.4", "client", False,
      "The client bounds the time it waits for WELCOME and closes when it expires."),
    R("PW-HS-16", "MUST NOT", "5.4", "client", True,
      "The client sends nothing after HELLO until it has received WELCOME."),
    R("PW-HS-17", "SHOULD", "5.2", "server", False,
      "connection_id is unique among the server's connections, for correlating logs."),
    R("PW-HS-18", "MUST", "5.3", "server", True,
      "A server honouring token expiry refuses an expired token (UNAUTHENTICATED) and closes a "
      "connection whose token expires with ERROR(TOKEN_EXPIRED) within a second."),
    R("PW-HS-19", "SHOULD", "5.3", "server", True,
      "Connections in the handshake are bounded apart from admitted ones, in total and per "
      "source address."),
    R("PW-HS-20", "MAY", "5.3", "server", True,
      "With auth on, some slots may be kept for clients with an accepted, named token."),
    # §6 subscriptions -----------------------------------------------------------------------
    R("PW-SUB-1", "MUST NOT", "6.1", "client", True,
      "A sub_id is not reused while it names a subscription that is requested, active, or "
      "being unsubscribed."),
    R("PW-SUB-2", "MUST", "6.2", "server", True,
      "Each SUBSCRIBE gets exactly one reply: SUBSCRIBED, or ERROR(code, 0x10, sub_id)."),
    R("PW-SUB-3", "MUST", "6.1", "server", True,
      "ALREADY_SUBSCRIBED when the sub_id is in use or the topic already has a subscription "
      "on the connection."),
    R("PW-SUB-4", "MUST", "6.1", "server", True,
      "TOO_MANY_SUBSCRIPTIONS when the connection already has max_subscriptions "
      "subscriptions."),
    R("PW-SUB-5", "MUST", "6.1", "server", True,
      "INVALID_POSITION for AFTER(E, S) when E is the current epoch and S is beyond the "
      "head."),
    R("PW-SUB-6", "MUST", "6.1", "server", True,
      "The checks of a SUBSCRIBE run in the order of §6.1 and the first failure is the "
      "reply."),
    R("PW-SUB-7", "MUST", "6.2", "server", True,
      "SUBSCRIBED states exactly one outcome, chosen by the rules of §6.2."),
    R("PW-SUB-8", "MUST", "6.2", "server", True,
      "since NEW: outcome NEW, start_seq = head + 1."),
    R("PW-SUB-9", "MUST", "6.2", "server", True,
      "AFTER(current epoch, S) with S+1 retained or S = head: RECOVERED, start_seq = S + 1."),
    R("PW-SUB-10", "MUST", "6.2", "server", True,
      "AFTER(current epoch, S) with S+1 no longer retained: GAP S+1..start_seq-1 "
      "(HISTORY_EXPIRED), start_seq = oldest retained, or head + 1 when none is."),
    R("PW-SUB-11", "MUST", "6.2", "server", True,
      "AFTER(other epoch, S): EPOCH_CHANGED, start_seq = oldest retained of the current epoch, "
      "or head + 1 when none is."),
    R("PW-SUB-12", "MUST", "6.2", "server", True,
      "LAST(N): as AFTER(current epoch, max(0, head - N)), outcome RECOVERED or GAP."),
    R("PW-SUB-13", "MUST", "6.2", "server", True,
      "OLDEST: RECOVERED, start_seq = oldest retained, or head + 1 when none is."),
    R("PW-SUB-14", "MUST", "6.2", "server", True,
      "SUBSCRIBED.epoch is the topic's current epoch and head_seq its last assigned sequence "
      "(0 if none)."),
    R("PW-SUB-15", "MUST", "6.4", "server", True,
      "UNSUBSCRIBE gets UNSUBSCRIBED(sub_id, epoch, position) or "
      "ERROR(UNKNOWN_SUBSCRIPTION, 0x12, sub_id)."),
    R("PW-SUB-21", "MUST", "6.4", "server", True,
      "After a topic reset, UNSUBSCRIBED and GOAWAY report the epoch and sequence of the "
      "subscription's last push (the old epoch until a push in the new one)."),
    R("PW-SUB-22", "MUST", "6.7", "server", True,
      "Pattern SUBSCRIBE: INVALID_TOPIC for a bad pattern or a position naming an invalid or "
      "unmatched topic."),
    R("PW-SUB-23", "MUST", "6.7", "server", True,
      "ALREADY_SUBSCRIBED when a new subscription can match a topic an existing one of the "
      "connection can match."),
    R("PW-SUB-24", "MUST", "6.7", "server", True,
      "TOO_MANY_PATTERNS when the connection already holds max_patterns pattern "
      "subscriptions."),
    R("PW-SUB-25", "MUST", "6.7", "server", True,
      "FORBIDDEN unless one subscribe permission matches every topic the pattern can match."),
    R("PW-SUB-26", "MUST", "6.7", "server", True,
      "Pattern SUBSCRIBE: INVALID_POSITION for since AFTER, a topic named twice, or a "
      "position beyond the head of the current epoch."),
    R("PW-SUB-27", "MUST", "6.7", "server", True,
      "TOO_MANY_TOPICS when more existing topics match than max_pattern_topics."),
    R("PW-SUB-28", "MUST", "6.7", "both", True,
      "A SUBSCRIBE with both AT_LEAST_ONCE and PATTERN is FIELD_OUT_OF_RANGE."),
    R("PW-SUB-29", "MUST", "6.7", "server", True,
      "A pattern subscription delivers every matching topic, including topics created later."),
    R("PW-SUB-30", "MUST", "6.7", "server", True,
      "Per-topic skips and epoch changes of a pattern subscription are SUBSCRIBED(TOPIC_STATUS), "
      "never GAP."),
    R("PW-SUB-31", "MUST", "6.7", "server", True,
      "A new topic beyond max_pattern_topics ends the subscription with "
      "ERROR(TOO_MANY_TOPICS, 0x10, sub_id)."),
    R("PW-SUB-32", "MUST", "6.7", "server", True,
      "UNSUBSCRIBED of a pattern carries epoch 0 and last_seq 0; GOAWAY lists no pattern "
      "subscription."),
    R("PW-SUB-33", "MUST", "6.7", "client", True,
      "SUBSCRIBED(TOPIC_STATUS) for a non-pattern sub_id or an unmatched topic is "
      "PROTOCOL_ERROR."),
    R("PW-SUB-16", "MUST NOT", "6.4", "server", True,
      "After UNSUBSCRIBED, no MESSAGE, MESSAGE_BATCH or GAP of that subscription is sent."),
    R("PW-SUB-17", "MUST", "6.3", "client", True,
      "Pushes for a subscription whose UNSUBSCRIBE is outstanding are discarded without "
      "error."),
    R("PW-SUB-18", "MUST", "6.3", "client", True,
      "A push for a topic with no subscription and no outstanding UNSUBSCRIBE is "
      "PROTOCOL_ERROR."),
    R("PW-SUB-19", "MUST", "6.1", "both", True,
      "Subscriptions belong to one connection and end when it closes."),
    R("PW-SUB-20", "MUST", "6.1", "server", True,
      "FORBIDDEN when the identity may not subscribe to the topic."),
    # §6.5, §7.3 epochs, sequences, order --------------------------------------------------
    R("PW-ORDER-1", "MUST", "6.5", "server", True,
      "Sequence numbers start at 1 in each epoch and each new message gets head + 1."),
    R("PW-ORDER-2", "MUST", "6.5", "server", True,
      "A topic's epoch is non-zero and changes whenever its history is reset or its sequence "
      "restarts."),
    R("PW-ORDER-3", "MUST NOT", "6.5", "server", False,
      "An epoch value is never reused for the same topic name."),
    R("PW-ORDER-4", "SHOULD", "6.5", "server", False,
      "Epochs are random 63-bit values or derived from a high-resolution start time."),
    R("PW-ORDER-5", "MUST", "7.3", "server", True,
      "SUBSCRIBED is sent before any MESSAGE, MESSAGE_BATCH or GAP of the subscription."),
    R("PW-ORDER-6", "MUST", "7.3", "server", True,
      "From start_seq on, every sequence is sent exactly once, in increasing order, in a "
      "MESSAGE, a batch record or a GAP range."),
    R("PW-ORDER-7", "MUST", "7.3", "client", True,
      "A push that breaks contiguity (not the next expected sequence, no GAP) is "
      "PROTOCOL_ERROR."),
    R("PW-ORDER-8", "MUST", "7.3", "server", True,
      "Messages published on one connection to one topic get sequences in the order their "
      "frames were received; a batch gets contiguous sequences with nothing in between."),
    R("PW-ORDER-9", "MUST", "7.3", "server", True,
      "Requests are processed in the order received; replies to SUBSCRIBE and UNSUBSCRIBE "
      "are sent in that order."),
    R("PW-ORDER-10", "MUST", "7.3", "server", True,
      "Replies to publish requests on the same topic are sent in the order the requests were "
      "received."),
    R("PW-ORDER-11", "MAY", "7.3", "server", True,
      "Frames of different subscriptions may be interleaved in any order."),
    R("PW-ORDER-12", "MUST", "6.5", "server", True,
      "When a subscribed topic's epoch changes, the subscription continues at sequence 1 of "
      "the new epoch (MESSAGE seq 1, batch base 1, or GAP first 1)."),
    R("PW-ORDER-13", "MUST", "6.5", "client", True,
      "A push in a new epoch is accepted only if it starts at sequence 1 (else "
      "PROTOCOL_ERROR); the position moves to (new epoch, 0) and the application is told."),
    R("PW-ORDER-14", "MUST NOT", "6.5", "server", True,
      "Never send epoch 0."),
    R("PW-ORDER-15", "MUST", "6.7", "server", True,
      "Per topic, the pushes of a pattern subscription are contiguous as for one topic."),
    # §6.6 resume ----------------------------------------------------------------------------
    R("PW-RESUME-1", "MUST", "6.6", "client", True,
      "A client that resumes subscribes with AFTER(E, S), its own recorded position (§8.4); "
      "at-least-once, S is processed and not below its last ACK."),
    R("PW-RESUME-2", "MUST", "6.6", "client", False,
      "On outcome GAP the client tells the application which sequences are lost."),
    R("PW-RESUME-3", "MUST", "6.6", "client", False,
      "On EPOCH_CHANGED the client drops its old position, adopts (epoch, start_seq - 1) and "
      "tells the application that continuity was lost."),
    R("PW-RESUME-4", "MUST NOT", "6.5", "both", False,
      "Sequence numbers of different epochs are never compared."),
    R("PW-RESUME-5", "MUST", "6.7", "server", True,
      "A pattern SUBSCRIBED is followed by exactly one SUBSCRIBED(TOPIC_STATUS) per position, "
      "in order, each before any push of its topic."),
    R("PW-RESUME-6", "MUST", "6.7", "client", False,
      "A client keeps a position per topic seen by a pattern subscription and lists them all "
      "when it resubscribes."),
    # §7 messages ----------------------------------------------------------------------------
    R("PW-PUB-1", "MUST NOT", "7.5", "client", True,
      "A non-zero publish request_id is not reused while its request is outstanding."),
    R("PW-PUB-3", "MUST", "7.5", "server", True,
      "A publish with request_id != 0 gets exactly one reply: PUBACK, or ERROR(code, type, "
      "request_id)."),
    R("PW-PUB-4", "MUST", "7.5", "server", True,
      "A publish with request_id 0 gets no PUBACK; a failure is still answered with "
      "ERROR(code, type, 0)."),
    R("PW-PUB-5", "MUST", "7.6", "server", True,
      "A PUBLISH_BATCH is accepted or rejected as a whole; accepted records get contiguous "
      "sequences and PUBACK.count is the record count."),
    R("PW-PUB-6", "MUST", "7.5", "server", True,
      "A publish is rejected with FORBIDDEN, INVALID_TOPIC or GOING_AWAY as §7.5 says; a "
      "rejected message gets no sequence and is never delivered."),
    R("PW-PUB-7", "MUST", "7.8", "server", True,
      "Topic, headers and payload are forwarded byte for byte; the push keeps the publish "
      "frame's flags."),
    R("PW-PUB-8", "MUST", "7.8", "server", True,
      "A push carries nothing subscriber-specific: the same sequences give the same bytes on "
      "every connection."),
    R("PW-PUB-9", "SHOULD", "7.8", "server", False,
      "Build each push frame once and send the same bytes to every subscriber."),
    R("PW-PUB-10", "MUST", "7.2", "client", True,
      "A MESSAGE_BATCH record is delivered exactly like a MESSAGE with sequence base_seq + i."),
    R("PW-PUB-11", "MUST", "7.4", "server", True,
      "A message too large for a subscriber's max_frame_size is reported with "
      "GAP(FRAME_TOO_LARGE) covering exactly the oversized messages; never dropped silently."),
    R("PW-PUB-12", "MUST", "7.7", "server", True,
      "PUBACK carries the topic's epoch and the first of the sequences assigned."),
    R("PW-PUB-13", "MUST", "7.4", "client", False,
      "A GAP is reported to the application with its range and reason."),
    R("PW-PUB-14", "SHOULD", "7.5", "client", False,
      "Bound the publish window: the publishes with a non-zero request_id sent and not yet "
      "answered."),
    R("PW-PUB-15", "SHOULD", "7.5", "client", True,
      "Advertise a max_frame_size at least 12 bytes above the servers' max_frame_size, so "
      "every accepted publish can be delivered."),
    # §8.3 acknowledgements ------------------------------------------------------------------
    R("PW-PUB-16", "MUST", "7.4", "client", True,
      "A batch record is judged by its one-record MESSAGE_BATCH; a server may send it as a "
      "MESSAGE when only that fits, and a client accepts either."),
    R("PW-ACK-1", "MUST NOT", "8.3", "client", True,
      "No ACK on an at-most-once subscription."),
    R("PW-ACK-2", "MUST", "8.3", "server", True,
      "ACK on an at-most-once subscription, beyond the position, or below the acknowledged "
      "level: ERROR(INVALID_ACK, 0x15, sub_id); the connection stays."),
    R("PW-ACK-3", "MUST", "8.3", "server", True,
      "ACK is cumulative; repeating the current level is accepted."),
    R("PW-ACK-4", "MUST", "8.3", "server", True,
      "The acknowledged level starts at start_seq - 1, and at 0 after an epoch change."),
    R("PW-ACK-5", "MUST", "8.3", "server", True,
      "An ACK naming no active subscription gets ERROR(UNKNOWN_SUBSCRIPTION, 0x15, sub_id); "
      "the connection stays."),
    R("PW-ACK-6", "MUST", "8.3", "client", False,
      "Acknowledge a sequence only after the application has processed it."),
    R("PW-ACK-7", "SHOULD", "8.3", "client", False,
      "Coalesce ACKs; acknowledge at least once per credit grant and before closing."),
    # §8.1 credit ----------------------------------------------------------------------------
    R("PW-FLOW-1", "MUST", "8.1", "server", True,
      "Credit starts at initial_credit; MESSAGE costs 1, MESSAGE_BATCH its count, every other "
      "frame nothing."),
    R("PW-FLOW-2", "MUST NOT", "8.1", "server", True,
      "Never send a MESSAGE or MESSAGE_BATCH that needs more credit than remains."),
    R("PW-FLOW-3", "MUST", "8.1", "server", True,
      "Split a batch when credit, the start position or the subscriber's frame limit requires; "
      "the records are unchanged."),
    R("PW-FLOW-4", "MUST", "8.1", "server", True,
      "CREDIT adds its increment; outstanding credit above 2^32-1 is FLOW_CONTROL_ERROR."),
    R("PW-FLOW-5", "MUST", "8.1", "client", True,
      "A push beyond the credit granted is FLOW_CONTROL_ERROR."),
    R("PW-FLOW-6", "MUST", "8.1", "server", True,
      "A CREDIT naming no active subscription gets ERROR(UNKNOWN_SUBSCRIPTION, 0x14, sub_id); "
      "the connection stays."),
    R("PW-FLOW-7", "SHOULD", "8.1", "client", False,
      "Replenish credit before it runs out (for example when half is used)."),
    R("PW-FLOW-8", "MUST NOT", "8.1", "both", True,
      "Credit never carries over to a new connection: a resumed subscription starts with its "
      "new initial_credit."),
    R("PW-FLOW-9", "MUST", "6.7", "server", True,
      "Every message of any topic of a pattern subscription consumes one unit of its credit."),
    # §8.2 slow consumers --------------------------------------------------------------------
    R("PW-SLOW-1", "MUST", "8.2", "server", False,
      "A slow subscriber costs O(1) memory beyond the shared history and never stalls the "
      "publisher or other subscribers."),
    R("PW-SLOW-2", "MUST", "8.2", "server", True,
      "DISCONNECT: lag above max_lag, or the next message gone from history, is "
      "ERROR(SLOW_CONSUMER) and close."),
    R("PW-SLOW-3", "MUST", "8.2", "server", True,
      "DROP: when the next message has left history, send GAP(SLOW_CONSUMER) up to the oldest "
      "retained and continue there."),
    R("PW-SLOW-4", "MUST NOT", "8.2", "server", True,
      "DROP: never disconnect for lag alone."),
    R("PW-SLOW-5", "MUST", "8.2", "server", True,
      "Lag and history loss are judged once per delivery round (after each appended run of "
      "messages, CREDIT or SUBSCRIBE), after queuing what credit and the queue allow; never "
      "between the messages of one run."),
    R("PW-SLOW-6", "MUST", "8.2", "server", True,
      "Under DISCONNECT the lag is head - max(position, head at SUBSCRIBE): the backlog a "
      "client asked for never counts."),
    # §8.5 heartbeats ------------------------------------------------------------------------
    R("PW-SLOW-7", "MUST NOT", "8.2", "server", True,
      "DROP's GAP costs no credit and may be eager or wait for credit; losses before the next "
      "push are one GAP, never two adjacent GAP(SLOW_CONSUMER) without a push between."),
    R("PW-HB-1", "MUST", "8.5", "both", True,
      "Send a frame at least every heartbeat interval; PING when there is nothing else."),
    R("PW-HB-2", "MUST", "8.5", "both", True,
      "Answer PING with PONG carrying the same opaque, without waiting for credit or the "
      "application."),
    R("PW-HB-3", "MUST", "8.5", "both", True,
      "Nothing received for 3 intervals: ERROR(HEARTBEAT_TIMEOUT) (best effort) and close."),
    R("PW-HB-4", "MUST", "8.5", "both", True,
      "Any bytes received restart the receive timer."),
    R("PW-HB-5", "MUST", "8.5", "both", True,
      "A PONG with an unknown opaque, or no PING outstanding, is accepted."),
    R("PW-HB-6", "MUST", "8.5", "both", True,
      "Heartbeat rules start when the handshake completes; before it the handshake timeout "
      "applies."),
    R("PW-HB-7", "MAY", "8.5", "both", True,
      "PING may be sent at any time after the handshake (e.g. to measure round-trip time)."),
    # §8.6 GOAWAY ----------------------------------------------------------------------------
    R("PW-HB-8", "MUST", "8.5", "server", True,
      "A PONG goes ahead of unwritten pushes and counts toward the outbound bound; when the "
      "queue is full the server stops reading rather than drop or delay a PONG."),
    R("PW-GOAWAY-1", "MUST", "8.6", "server", True,
      "A server shutting down gracefully sends GOAWAY(SHUTTING_DOWN, after, jitter, positions) "
      "on every open connection."),
    R("PW-GOAWAY-2", "MUST", "8.6", "server", True,
      "GOAWAY lists one position per active subscription (as many as fit the client's "
      "limit): last acknowledged (at-least-once) or position (at-most-once)."),
    R("PW-GOAWAY-3", "MUST", "8.6", "server", True,
      "After GOAWAY, SUBSCRIBE and publishes get ERROR(GOING_AWAY); CREDIT, ACK, UNSUBSCRIBE, "
      "PING and PONG are still processed."),
    R("PW-GOAWAY-4", "MUST NOT", "8.6", "server", True,
      "After GOAWAY, no MESSAGE, MESSAGE_BATCH or GAP is sent."),
    R("PW-GOAWAY-5", "MUST", "8.6", "server", True,
      "Close when the client closes, or when the drain timeout after GOAWAY expires."),
    R("PW-GOAWAY-6", "MUST NOT", "8.6", "client", True,
      "After receiving GOAWAY, send no SUBSCRIBE, PUBLISH or PUBLISH_BATCH on that "
      "connection."),
    R("PW-GOAWAY-7", "MUST NOT", "8.6", "client", True,
      "Reconnect no earlier than reconnect_after_ms plus a uniformly random 0..jitter ms, "
      "counted from receipt of the GOAWAY."),
    R("PW-GOAWAY-8", "MAY", "8.6", "client", True,
      "A client may send GOAWAY before closing deliberately."),
    R("PW-GOAWAY-9", "MUST", "8.6", "client", True,
      "A client GOAWAY has code NO_ERROR, zero delays and no positions."),
    R("PW-GOAWAY-10", "MUST", "8.6", "server", True,
      "A client GOAWAY is a graceful close, not an error: the server sends no more pushes and "
      "no ERROR, ignores any positions in it, and closes."),
    R("PW-GOAWAY-11", "MUST NOT", "8.6", "both", True,
      "At most one GOAWAY per sender per connection."),
    R("PW-GOAWAY-12", "SHOULD", "8.6", "client", False,
      "After GOAWAY, acknowledge what was processed, then close."),
    R("PW-GOAWAY-13", "MUST", "8.6", "server", True,
      "A shutdown closes a connection still in the handshake with ERROR(SHUTTING_DOWN, 0, 0) "
      "once the prefaces are exchanged (before that, with nothing), never with GOAWAY."),
    # §8.7-§8.8 errors -----------------------------------------------------------------------
    R("PW-ERR-1", "MUST", "8.7", "both", True,
      "A connection-level error is ERROR(code, 0, 0, message) (best effort) followed by "
      "close."),
    R("PW-ERR-2", "MUST NOT", "8.7", "both", True,
      "Nothing is sent after a connection-level ERROR."),
    R("PW-ERR-3", "MUST", "8.7", "both", True,
      "A received connection-level ERROR closes the connection; nothing more is sent."),
    R("PW-ERR-4", "MUST", "8.7", "server", True,
      "A request-level error is ERROR(code, request frame type, sub_id or request_id); the "
      "connection stays open."),
    R("PW-ERR-5", "MUST", "8.7", "both", True,
      "Codes are used only in the scope the registry gives them (§11)."),
    R("PW-ERR-6", "MUST NOT", "8.7", "both", True,
      "An unknown code is never a decoding error: request_type 0 closes, otherwise the "
      "request failed; an unknown gap reason is a loss."),
    R("PW-ERR-7", "MUST", "8.7", "client", True,
      "A client ERROR always has request_type 0 and request_id 0."),
    R("PW-ERR-8", "MUST NOT", "8.7", "both", False,
      "An ERROR message contains no secrets and nobody acts on its text."),
    R("PW-ERR-9", "SHOULD", "8.7", "both", False,
      "After ERROR, shut down the write side and read for a short time before closing, so the "
      "ERROR is not destroyed by a reset."),
    R("PW-ERR-10", "SHOULD", "8.8", "client", True,
      "Reconnect after temporary errors and connection loss with exponential backoff and "
      "jitter; not automatically after terminal ones."),
    R("PW-ERR-11", "MUST", "8.7", "both", True,
      "PROTOCOL_ERROR when a rule is broken and no more specific code applies."),
    R("PW-ERR-12", "MUST NOT", "8.7", "client", True,
      "After the handshake a request-level ERROR never ends the connection, even when it "
      "matches no request."),
    # §8.9 client behaviour ------------------------------------------------------------------
    R("PW-CLIENT-1", "MUST NOT", "8.9", "client", True,
      "No automatic reconnect after a terminal code, whichever side sent it."),
    R("PW-CLIENT-2", "MUST", "8.9", "client", True,
      "An unknown connection-level code (ERROR or GOAWAY) is temporary: reconnect with "
      "backoff or the GOAWAY's delay."),
    R("PW-CLIENT-3", "MUST", "8.9", "client", True,
      "After GOAWAY with a temporary or unknown code reconnect after its delay, not the "
      "backoff; with a terminal code do not reconnect automatically."),
    R("PW-CLIENT-4", "MUST", "8.9", "client", True,
      "Close the connection that sent GOAWAY no later than when opening the next one; "
      "preferably once the pushes before it are processed and acknowledged."),
    R("PW-CLIENT-5", "MUST NOT", "8.9", "client", True,
      "EOF or reset, also inside a frame whose header passed the header checks, is a lost "
      "connection: no ERROR is sent; reconnect with backoff."),
    R("PW-CLIENT-6", "MUST", "8.9", "client", True,
      "Automatic attempts wait uniformly d/2..d with d = min(cap, base x 2^n)."),
    R("PW-CLIENT-7", "MUST NOT", "8.9", "client", True,
      "The backoff does not reset on WELCOME alone: only after a stable time open or a "
      "delivered message."),
    R("PW-CLIENT-8", "MUST NOT", "8.9", "client", True,
      "Temporary request refusals are not repeated at once: TOO_MANY_SUBSCRIPTIONS after a "
      "subscription ended, RATE_LIMITED after a backoff, GOING_AWAY on a new connection."),
    R("PW-CLIENT-9", "MUST NOT", "8.9", "client", True,
      "A request refused with a terminal code is not repeated unchanged (INVALID_POSITION: no "
      "resubscribe from the same position)."),
    R("PW-CLIENT-10", "SHOULD", "8.9", "client", True,
      "Acknowledge across a gap: reported gap sequences count as processed."),
    R("PW-CLIENT-11", "SHOULD", "8.9", "client", True,
      "Acknowledge processed messages within one heartbeat interval."),
    R("PW-CLIENT-12", "MUST NOT", "8.9", "client", True,
      "Credit of an old connection is not counted on the new one."),
    R("PW-CLIENT-13", "MUST", "8.9", "client", True,
      "Frames before a connection-level ERROR are processed as usual (messages delivered, "
      "positions advanced)."),
    R("PW-CLIENT-14", "MUST", "8.9", "client", True,
      "Before declaring HEARTBEAT_TIMEOUT, read and process what the transport delivered; an "
      "ERROR found that way wins."),
    R("PW-CLIENT-15", "MUST", "8.9", "client", True,
      "Accept every WELCOME heartbeat_ms in 1000..600000 (below 1000 may be refused)."),
    R("PW-CLIENT-16", "MUST", "8.9", "client", True,
      "SUBSCRIBED for no awaiting SUBSCRIBE, a second one, epoch 0, start_seq 0 or above "
      "head+1, a GAP not ending at start_seq - 1, or an outcome the request does not allow is "
      "PROTOCOL_ERROR."),
    R("PW-CLIENT-17", "SHOULD", "8.9", "client", True,
      "Check that RECOVERED / GAP answers to AFTER(E, S) start at S + 1."),
    R("PW-CLIENT-18", "MUST", "8.9", "client", True,
      "A GAP for an unknown sub_id, or a push before its subscription's SUBSCRIBED, is "
      "PROTOCOL_ERROR."),
    # §9 topics and headers ------------------------------------------------------------------
    R("PW-TOPIC-1", "MUST", "9.1", "both", True,
      "A topic name is 1-255 bytes of UTF-8 in non-empty '/'-separated segments, without "
      "U+0000-U+001F or U+007F."),
    R("PW-TOPIC-2", "MUST", "9.1", "server", True,
      "A SUBSCRIBE or publish with an invalid topic name gets ERROR(INVALID_TOPIC); the "
      "connection stays."),
    R("PW-TOPIC-3", "MUST", "9.1", "both", True,
      "Topic names are compared byte for byte: no normalisation, case-sensitive."),
    R("PW-TOPIC-4", "MUST", "9.2", "both", True,
      "Header order and repeated keys are preserved end to end."),
    R("PW-TOPIC-5", "SHOULD NOT", "9.2", "both", False,
      "Applications do not use header keys starting with 'pw-' (reserved)."),
    R("PW-TOPIC-6", "MUST", "9.3", "server", True,
      "A publish on a reserved topic ($ first segment) is FORBIDDEN unless the server documents "
      "it as writable and the identity may write it."),
    R("PW-TOPIC-7", "MUST", "9.1", "both", True,
      "'+' and '#' are reserved: a name containing one is INVALID_TOPIC (SUBSCRIBE without "
      "PATTERN, PUBLISH, PUBLISH_BATCH)."),
    R("PW-TOPIC-8", "MUST", "9.4", "both", True,
      "A pattern has topic-name segments, each a literal, '+', or a last '#', and at least "
      "one wildcard."),
    R("PW-TOPIC-9", "MUST", "9.4", "both", True,
      "'+' matches one segment, a last '#' the rest (zero or more); a wildcard first segment "
      "never matches a '$' topic."),
    # §13 limits -----------------------------------------------------------------------------
    R("PW-LIMIT-1", "MUST", "13", "server", True,
      "Bound the number of connections (TOO_MANY_CONNECTIONS beyond it)."),
    R("PW-LIMIT-2", "MUST", "13", "server", False,
      "Bound each topic's history by message count and by bytes."),
    R("PW-LIMIT-3", "MUST", "13", "server", False,
      "Bound each connection's outbound queue in bytes; when full, subscribers lag in "
      "history instead."),
    R("PW-LIMIT-4", "MUST", "13", "both", False,
      "Bound input buffering per connection to one frame header plus the advertised "
      "max_frame_size, plus one read."),
    R("PW-LIMIT-5", "SHOULD", "13", "server", False,
      "Bound the number of topics; a topic that is evicted and recreated gets a new epoch."),
    R("PW-LIMIT-6", "MUST", "13", "server", True,
      "A connection closed for idleness (no subscription, no request) gets ERROR(IDLE_TIMEOUT)."),
    R("PW-LIMIT-7", "MUST", "13", "server", True,
      "Bound the server's memory as a whole; when a publish does not fit, trim the oldest "
      "history first, and refuse what still does not fit with RESOURCE_EXHAUSTED."),
    R("PW-LIMIT-8", "SHOULD", "13", "server", True,
      "SUBSCRIBE alone makes at most a placeholder that retains nothing; eviction takes "
      "placeholders before topics that retain history."),
    R("PW-LIMIT-9", "SHOULD", "13", "server", True,
      "Per-identity quotas (topics created, subscriptions) are answered QUOTA_EXCEEDED, and "
      "an identity's topic quota evicts its own topics, never another identity's."),
    # §12 security ---------------------------------------------------------------------------
    R("PW-SEC-1", "SHOULD", "12", "both", False,
      "Use TLS whenever auth tokens are used or the data is not public."),
    R("PW-SEC-2", "SHOULD NOT", "12", "client", False,
      "Do not send a non-empty auth token without TLS unless explicitly configured."),
    R("PW-SEC-3", "MUST", "12", "server", True,
      "Authorise every SUBSCRIBE and every publish per topic (FORBIDDEN)."),
    R("PW-SEC-4", "MUST", "12", "server", True,
      "Authorisation is checked before a topic is created or any of its state is revealed; "
      "FORBIDDEN looks the same whether the topic exists or not."),
    R("PW-SEC-5", "MUST NOT", "12", "both", False,
      "Allocate for a payload before its length passed the limit, or for a counted array "
      "beyond what the remaining payload can hold."),
    R("PW-SEC-6", "MUST", "12", "server", True,
      "The handshake timeout runs from accept, so a slow preface is also cut off."),
    R("PW-SEC-7", "SHOULD", "12", "server", True,
      "Bound the time a single frame may take to arrive once its header is in."),
    R("PW-SEC-8", "SHOULD", "12", "server", False,
      "Rate-limit failed authentications and subscription churn."),
    R("PW-SEC-9", "SHOULD", "12", "server", False,
      "Compare auth tokens in constant time."),
    R("PW-SEC-10", "MUST NOT", "12", "both", False,
      "Never log auth tokens."),
    R("PW-SEC-11", "SHOULD", "12", "server", False,
      "Auth tokens are short-lived or revocable; they are bearer credentials."),
    R("PW-SEC-12", "SHOULD", "5.3", "server", True,
      "Bound the connections of one source address below the connection limit."),
    R("PW-SEC-13", "MUST", "12", "server", True,
      "Refusals for failed-authentication throttling use AUTH_THROTTLED; requests refused for "
      "rate get the request-level RATE_LIMITED and the connection stays open."),
    R("PW-SEC-14", "MUST", "12", "server", True,
      "A connection closed because one frame took too long to arrive gets "
      "ERROR(HEARTBEAT_TIMEOUT, 0, 0)."),
    # §15 several nodes ----------------------------------------------------------------------
    R("PW-NODE-1", "MUST", "15.1", "server", True,
      "Nodes sharing a history assign a topic's sequences from one place, atomically: "
      "contiguous across nodes, a batch's sequences consecutive."),
    R("PW-NODE-2", "MUST", "15.2", "server", True,
      "A PUBACK is sent only once the shared store has the message."),
    R("PW-NODE-3", "MUST", "15.2", "server", True,
      "History lost from the shared store (flush, eviction, restart without persistence, "
      "writes lost in a restart) gives the topic a new epoch, never a silent gap."),
    R("PW-NODE-4", "MUST", "15.3", "server", True,
      "While the shared store cannot be reached, publishes are refused with "
      "BROKER_UNAVAILABLE and nothing is acknowledged; subscriptions stay open."),
    R("PW-NODE-5", "SHOULD", "15.3", "server", False,
      "A node reconnects to an unreachable store with exponential backoff."),
)  # fmt: skip

#: IDs that were once assigned and then dropped; their numbers are never given out again.
RETIRED: frozenset[str] = frozenset(
    {
        # "A server that detects a request_id reused while outstanding answers DUPLICATE_ID":
        # a server answers in order, so it can never see two outstanding; DUPLICATE_ID is
        # reserved.
        "PW-PUB-2",
    }
)

BY_ID: dict[str, Requirement] = {r.id: r for r in REQUIREMENTS}


def problems() -> list[str]:
    """Everything wrong with the table itself (empty when it is sound)."""
    found: list[str] = []
    seen: set[str] = set()
    for r in REQUIREMENTS:
        if r.id in seen:
            found.append(f"{r.id}: duplicate ID")
        seen.add(r.id)
        if not ID_RE.fullmatch(r.id):
            found.append(f"{r.id}: malformed ID")
        if r.id in RETIRED:
            found.append(f"{r.id}: retired ID reused")
        if r.level not in LEVELS:
            found.append(f"{r.id}: unknown level {r.level!r}")
        if r.applies_to not in ("client", "server", "both"):
            found.append(f"{r.id}: unknown role {r.applies_to!r}")
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", r.section):
            found.append(f"{r.id}: malformed section {r.section!r}")
        if not r.text or r.text != r.text.strip():
            found.append(f"{r.id}: empty or padded text")
    return found
