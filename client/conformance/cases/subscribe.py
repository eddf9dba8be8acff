"""subscribe-ordering: SUBSCRIBED, per-topic total order, contiguous sequences, PUBACK,
byte-identical forwarding and UNSUBSCRIBE (SPEC.md §6, §7)."""

from __future__ import annotations

from functools import partial

import trio

from pushwire.client.conformance.registry import case
from pushwire.client.conformance.runner import CaseContext, check_seqs
from pushwire.client.conformance.wire import TIMEOUT, CaseFailed, describe
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import Outcome, SinceKind

CAT = "subscribe-ordering"


@case(
    "SO-01",
    "SUBSCRIBE(NEW) on a fresh topic: SUBSCRIBED(NEW, epoch != 0, start_seq 1, head 0)",
    category=CAT,
    requirements=("PW-SUB-2", "PW-SUB-8", "PW-SUB-14", "PW-ORDER-1", "PW-ORDER-14"),
)
async def subscribed_new(ctx: CaseContext) -> None:
    """Sequences start at 1 in each epoch; an epoch is never 0."""
    conn = await ctx.connect()
    reply = await ctx.subscribe(conn, ctx.topic())
    want = (Outcome.NEW, 1, 0)
    if (reply.outcome, reply.start_seq, reply.head_seq) != want or reply.epoch == 0:
        raise CaseFailed(
            "SUBSCRIBED(outcome=NEW, epoch!=0, start_seq=1, head_seq=0)", describe(reply)
        )


@case(
    "SO-02",
    "Messages arrive in publish order with contiguous sequences from start_seq",
    category=CAT,
    requirements=("PW-ORDER-1", "PW-ORDER-6", "PW-ORDER-8", "PW-FRAME-12"),
)
async def in_order(ctx: CaseContext) -> None:
    """Twenty PUBLISH frames in one write; the subscriber sees seqs start_seq.. in order,
    with the payloads in the same order and the epoch of SUBSCRIBED."""
    topic = ctx.topic()
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic)
    payloads = [f"m{i}".encode() for i in range(20)]
    epoch, seqs = await ctx.publish(topic, payloads)
    check_seqs("PUBACK", seqs, range(reply.start_seq, reply.start_seq + 20))
    msgs = await ctx.receive_seqs(sub, topic, seqs, "subscriber")
    if [m.payload for m in msgs] != payloads:
        raise CaseFailed("payloads in publish order", repr([m.payload for m in msgs]))
    if {m.epoch for m in msgs} != {reply.epoch} or epoch != reply.epoch:
        raise CaseFailed(
            f"epoch {reply.epoch} everywhere",
            f"PUBACK {epoch}, messages {sorted({m.epoch for m in msgs})}",
        )


@case(
    "SO-03",
    "Two publishers, two subscribers: both subscribers see one identical order",
    category=CAT,
    requirements=("PW-ORDER-6", "PW-PUB-8"),
)
async def total_order(ctx: CaseContext) -> None:
    """Per topic there is one order, the server's: interleaved publishes from two
    connections are sequenced once and every subscriber sees that sequence."""
    topic = ctx.topic()
    s1, s2 = await ctx.connect(), await ctx.connect()
    await ctx.subscribe(s1, topic)
    await ctx.subscribe(s2, topic)
    p1, p2 = await ctx.connect(), await ctx.connect()
    async with trio.open_nursery() as n:
        n.start_soon(partial(ctx.publish, topic, [f"a{i}".encode() for i in range(15)], conn=p1))
        n.start_soon(partial(ctx.publish, topic, [f"b{i}".encode() for i in range(15)], conn=p2))
    m1 = await ctx.receive(s1, topic, 30)
    m2 = await ctx.receive(s2, topic, 30)
    check_seqs("subscriber 1", [m.seq for m in m1], range(1, 31))
    if [(m.seq, m.payload) for m in m1] != [(m.seq, m.payload) for m in m2]:
        raise CaseFailed("identical (seq, payload) lists", "the subscribers disagree")


@case(
    "SO-04",
    "PUBACK: request_id echoed, epoch, first_seq contiguous across publishes, count",
    category=CAT,
    requirements=("PW-PUB-3", "PW-PUB-12", "PW-ORDER-10"),
)
async def puback(ctx: CaseContext) -> None:
    """A publisher learns exactly where its messages went."""
    topic = ctx.topic()
    pub = await ctx.connect()
    await pub.send(F.Publish(11, topic, b"a"), F.PublishBatch(12, topic, (F.Record(b"b"),) * 3))
    await pub.send(F.Publish(13, topic, b"c"))
    a = await pub.expect_type(F.Puback, request_id=11, first_seq=1, count=1)
    b = await pub.expect_type(F.Puback, request_id=12, first_seq=2, count=3)
    c = await pub.expect_type(F.Puback, request_id=13, first_seq=5, count=1)
    if not a.epoch or not a.epoch == b.epoch == c.epoch:
        raise CaseFailed("one non-zero epoch in all PUBACKs", f"{a}, {b}, {c}")


@case(
    "SO-05",
    "PUBLISH with request_id 0 gets no PUBACK",
    category=CAT,
    requirements=("PW-PUB-4",),
)
async def no_puback(ctx: CaseContext) -> None:
    """request_id 0 means fire-and-forget; the message is still published."""
    topic = ctx.topic()
    pub = await ctx.connect()
    await pub.send(F.Publish(0, topic, b"silent"), F.Publish(5, topic, b"acked"))
    obs = await pub.next_frame()
    if not isinstance(obs, F.Puback) or obs.request_id != 5 or obs.first_seq != 2:
        raise CaseFailed("only PUBACK(request_id=5, first_seq=2)", describe(obs))


@case(
    "SO-06",
    "Headers and payload reach subscribers byte for byte",
    category=CAT,
    requirements=("PW-PUB-7", "PW-TOPIC-4", "PW-FRAME-16"),
)
async def headers_preserved(ctx: CaseContext) -> None:
    """Repeated keys, binary values, empty payloads and non-ASCII keys are opaque to the
    server: order and bytes are kept, and so is the HAS_HEADERS flag (an empty header
    block is not the same bytes as no block)."""
    topic = ctx.topic()
    sub = await ctx.connect()
    await ctx.subscribe(sub, topic)
    headers = (("k", b"1"), ("k", b"\x00\xff"), ("ключ", b""), ("x-unknown", b"v" * 300))
    await ctx.publish(topic, [b""], headers=headers)
    await ctx.publish(topic, [bytes(range(256))])
    await ctx.publish(topic, [b"empty block"], headers=())
    msgs = await ctx.receive(sub, topic, 3)
    if msgs[0].headers != headers or msgs[0].payload != b"":
        raise CaseFailed(f"headers {headers!r}, empty payload", f"{msgs[0].headers!r}")
    if msgs[1].headers is not None or msgs[1].payload != bytes(range(256)):
        raise CaseFailed("HAS_HEADERS clear, payload 00..ff", repr(msgs[1]))
    if msgs[2].headers != ():
        raise CaseFailed(
            "HAS_HEADERS set with an empty header block (the flags are kept)",
            f"headers {msgs[2].headers!r}",
        )


@case(
    "SO-07",
    "PUBLISH_BATCH: records get consecutive sequences and arrive in record order",
    category=CAT,
    requirements=("PW-PUB-5", "PW-ORDER-8"),
)
async def batch_order(ctx: CaseContext) -> None:
    """A batch is sequenced atomically (base..base+count-1)."""
    topic = ctx.topic()
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic)
    payloads = [f"r{i}".encode() for i in range(10)]
    _, seqs = await ctx.publish_batch(topic, payloads)
    check_seqs("PUBACK", seqs, range(reply.start_seq, reply.start_seq + 10))
    msgs = await ctx.receive_seqs(sub, topic, seqs, "subscriber")
    if [m.payload for m in msgs] != payloads:
        raise CaseFailed("records in order", repr([m.payload for m in msgs]))


@case(
    "SO-08",
    "SUBSCRIBE(NEW) on a topic with history starts after the head, no old messages",
    category=CAT,
    requirements=("PW-SUB-8", "PW-SUB-14"),
)
async def new_skips_history(ctx: CaseContext) -> None:
    """NEW means live only: start_seq = head_seq + 1."""
    topic = ctx.topic()
    await ctx.publish(topic, [b"old1", b"old2", b"old3"])
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic)
    if (reply.outcome, reply.start_seq, reply.head_seq) != (Outcome.NEW, 4, 3):
        raise CaseFailed("SUBSCRIBED(NEW, start_seq=4, head_seq=3)", describe(reply))
    await ctx.publish(topic, [b"live"])
    msgs = await ctx.receive(sub, topic, 1)
    if (msgs[0].seq, msgs[0].payload) != (4, b"live"):
        raise CaseFailed("seq 4 'live'", repr(msgs[0]))


@case(
    "SO-09",
    "UNSUBSCRIBE: UNSUBSCRIBED(last_seq = last delivered), then nothing more",
    category=CAT,
    requirements=("PW-SUB-15", "PW-SUB-16"),
)
async def unsubscribe(ctx: CaseContext) -> None:
    """After UNSUBSCRIBED no frame of that topic may follow."""
    topic = ctx.topic()
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, sub_id=8)
    await ctx.publish(topic, [b"1", b"2", b"3"])
    await ctx.receive(sub, topic, 3)
    await sub.send(F.Unsubscribe(8))
    await sub.expect_type(F.Unsubscribed, sub_id=8, epoch=reply.epoch, last_seq=3)
    await ctx.publish(topic, [b"4", b"5"])
    await sub.expect_silence(ctx.quiet, "no MESSAGE after UNSUBSCRIBED")


@case(
    "SO-10",
    "Several topics on one connection: each keeps its own order",
    category=CAT,
    requirements=("PW-ORDER-6", "PW-ORDER-11"),
)
async def many_topics(ctx: CaseContext) -> None:
    """Interleaved publishes to three topics; per topic the order is exact."""
    sub = await ctx.connect()
    topics = [ctx.topic(f"multi{i}") for i in range(3)]
    for i, t in enumerate(topics):
        await ctx.subscribe(sub, t, sub_id=i + 1)
    pub = await ctx.publisher()
    frames = [F.Publish(0, topics[i % 3], f"{i}".encode()) for i in range(30)]
    await pub.send(*frames)
    per: dict[str, list[int]] = {t: [] for t in topics}
    got = 0
    while got < 30:
        obs = await sub.next_frame()
        if isinstance(obs, F.Message) and obs.topic in per:
            per[obs.topic].append(obs.seq)
            got += 1
        elif isinstance(obs, F.MessageBatch) and obs.topic in per:
            per[obs.topic].extend(range(obs.base_seq, obs.last_seq + 1))
            got += obs.count
        else:
            raise CaseFailed("30 messages over 3 topics", describe(obs))
    for t in topics:
        check_seqs(t, per[t], range(1, 11))


@case(
    "SO-11",
    "A sub_id can be reused after UNSUBSCRIBED",
    category=CAT,
    requirements=("PW-SUB-3",),
    level="SHOULD",
)
async def reuse_sub_id(ctx: CaseContext) -> None:
    """Uniqueness is among *active* subscriptions only."""
    conn = await ctx.connect()
    await ctx.subscribe(conn, ctx.topic(), sub_id=4)
    await conn.send(F.Unsubscribe(4))
    await conn.expect_type(F.Unsubscribed, sub_id=4)
    await ctx.subscribe(conn, ctx.topic(), sub_id=4)


@case(
    "SO-12",
    "OLDEST on a fresh topic after publishes: RECOVERED from seq 1, in order",
    category=CAT,
    requirements=("PW-SUB-13", "PW-ORDER-6"),
)
async def oldest_in_order(ctx: CaseContext) -> None:
    """History replay is ordered like live delivery (several messages per pull)."""
    topic = ctx.topic()
    await ctx.publish(topic, [f"h{i}".encode() for i in range(12)])
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.OLDEST)
    if (reply.outcome, reply.start_seq, reply.head_seq) != (Outcome.RECOVERED, 1, 12):
        raise CaseFailed("SUBSCRIBED(RECOVERED, start_seq=1, head_seq=12)", describe(reply))
    await ctx.receive_seqs(sub, topic, range(1, 13), "replay")


@case(
    "SO-13",
    "Pipelined SUBSCRIBE / UNSUBSCRIBE requests are answered in the order sent",
    category=CAT,
    requirements=("PW-ORDER-9", "PW-SUB-2"),
)
async def pipelined_replies(ctx: CaseContext) -> None:
    """Five requests in one write; the replies come back in request order, one each."""
    conn = await ctx.connect()
    t = [ctx.topic(f"p{i}") for i in range(4)]
    await conn.send(
        F.Subscribe(sub_id=1, topic=t[0], initial_credit=1),
        F.Subscribe(sub_id=2, topic=t[1], initial_credit=1),
        F.Unsubscribe(1),
        F.Subscribe(sub_id=3, topic="bad//", initial_credit=1),
        F.Subscribe(sub_id=4, topic=t[3], initial_credit=1),
        F.Unsubscribe(2),
    )
    want = [
        "SUBSCRIBED 1",
        "SUBSCRIBED 2",
        "UNSUBSCRIBED 1",
        "ERROR 3",
        "SUBSCRIBED 4",
        "UNSUBSCRIBED 2",
    ]
    got: list[str] = []
    for _ in want:
        obs = await conn.next_frame()
        if isinstance(obs, F.Subscribed):
            got.append(f"SUBSCRIBED {obs.sub_id}")
        elif isinstance(obs, F.Unsubscribed):
            got.append(f"UNSUBSCRIBED {obs.sub_id}")
        elif isinstance(obs, F.Error) and obs.request_type:
            got.append(f"ERROR {obs.request_id}")
        else:
            got.append(describe(obs))
            break
    if got != want:
        raise CaseFailed(", ".join(want), ", ".join(got))


@case(
    "SO-14",
    "Topic names match byte for byte: no case folding or normalisation",
    category=CAT,
    requirements=("PW-TOPIC-3",),
)
async def exact_topic_match(ctx: CaseContext) -> None:
    """A subscriber of '<base>/café' (NFC) receives nothing published to '<base>/Café' or
    '<base>/cafe\u0301' (NFD), then exactly its own message."""
    base = ctx.topic("exact")
    mine = f"{base}/caf\u00e9"
    sub = await ctx.connect()
    await ctx.subscribe(sub, mine)
    for other in (f"{base}/Caf\u00e9", f"{base}/cafe\u0301"):
        await ctx.publish(other, [b"not for you"])
    await ctx.publish(mine, [b"yours"])
    msgs = await ctx.receive(sub, mine, 1)
    if msgs[0].payload != b"yours" or msgs[0].seq != 1:
        raise CaseFailed("only the message published to the exact name", repr(msgs[0]))


@case(
    "SO-15",
    "A subscription ends with its connection: nothing follows the client to a new one",
    category=CAT,
    requirements=("PW-SUB-19",),
)
async def subscription_ends_with_connection(ctx: CaseContext) -> None:
    """Subscriptions belong to one connection. After the connection that held an
    at-least-once subscription (with a message not yet acknowledged) closes, a new
    connection with the same client name receives nothing it did not subscribe to, and the
    same sub_id and topic are free on it: SUBSCRIBED(NEW), not ALREADY_SUBSCRIBED."""
    topic = ctx.topic()
    first = await ctx.connect()
    await ctx.subscribe(first, topic, sub_id=7, at_least_once=True)
    await ctx.publish(topic, [b"unacknowledged"])
    await ctx.receive(first, topic, 1)
    await first.aclose()
    second = await ctx.connect()
    await ctx.publish(topic, [b"after the close"])
    obs = await second.next_frame(ctx.quiet)
    if obs is not TIMEOUT:
        raise CaseFailed("nothing on a new connection that subscribed to nothing", describe(obs))
    reply = await ctx.subscribe(second, topic, sub_id=7, at_least_once=True)
    if (reply.outcome, reply.start_seq, reply.head_seq) != (Outcome.NEW, 3, 2):
        raise CaseFailed("SUBSCRIBED(outcome=NEW, start_seq=3, head_seq=2)", describe(reply))
    await ctx.publish(topic, [b"new"])
    check_seqs("the new subscription", [m.seq for m in await ctx.receive(second, topic, 1)], [3])


@case(
    "SO-16",
    "UNSUBSCRIBE mid-stream: UNSUBSCRIBED.last_seq is the position, not the topic's head",
    category=CAT,
    requirements=("PW-SUB-15", "PW-SUB-16"),
)
async def unsubscribe_mid_stream(ctx: CaseContext) -> None:
    """Credit 2 with 5 messages published: 2 are delivered and 3 wait. UNSUBSCRIBED must
    report the last sequence pushed (start_seq + 1, §8.4), since that is where the client
    resumes; reporting the head (start_seq + 4) would make a resuming client skip the
    three messages it never saw. Nothing of the subscription follows."""
    topic = ctx.topic()
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, sub_id=6, credit=2)
    await ctx.publish(topic, [f"{i}".encode() for i in range(5)])
    await ctx.receive_seqs(sub, topic, [reply.start_seq, reply.start_seq + 1], "within credit")
    await sub.expect_silence(ctx.quiet, "nothing beyond the credit of 2")
    await sub.send(F.Unsubscribe(6))
    await sub.expect_type(F.Unsubscribed, sub_id=6, epoch=reply.epoch, last_seq=reply.start_seq + 1)
    await sub.send(F.Credit(6, 10))  # the subscription is gone: nothing may be released
    await sub.expect_type(F.Error, code=ErrorCode.UNKNOWN_SUBSCRIPTION, request_id=6)
    await sub.expect_silence(ctx.quiet, "no push after UNSUBSCRIBED")
