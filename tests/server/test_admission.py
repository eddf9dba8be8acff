"""The admission and throttling policy, without sockets: time is an argument."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pushwire.protocol.errors import ErrorCode
from pushwire.server.admission import Admission, AdmissionLimits, Bucket, LogSampler, source_of

TOO_MANY = ErrorCode.TOO_MANY_CONNECTIONS


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("127.0.0.2:5000", "127.0.0.2"),
        ("[::1]:7447", "::1"),
        ("[fe80::1%eth0]:1", "fe80::1%eth0"),
        ("unix-socket", "unix-socket"),
        ("memory:3", "memory"),
    ],
)
def test_the_source_of_a_peer_is_its_host_without_the_port(peer: str, source: str) -> None:
    assert source_of(peer) == source


def test_one_source_cannot_take_every_slot() -> None:
    adm = Admission(AdmissionLimits(max_connections=10, per_source=4, handshaking=100))
    for _ in range(4):
        assert adm.connect("10.0.0.1") is None
    assert adm.connect("10.0.0.1") is TOO_MANY
    assert adm.connect("10.0.0.2") is None
    assert adm.connections_of("10.0.0.1") == 4


def test_handshaking_connections_have_their_own_cap_and_free_it_when_admitted() -> None:
    adm = Admission(AdmissionLimits(max_connections=10, per_source=10, handshaking=2))
    assert adm.connect("a") is None
    assert adm.connect("b") is None
    assert adm.connect("c") is TOO_MANY  # two are still in the handshake
    assert adm.admit("a", named=False) is None
    assert adm.connect("c") is None
    assert (adm.handshaking, adm.admitted) == (2, 1)


def test_anonymous_clients_cannot_take_the_reserved_slots() -> None:
    limits = AdmissionLimits(
        max_connections=3, per_source=10, handshaking=10, reserved_for_authenticated=1
    )
    adm = Admission(limits, auth_required=True)
    for _ in range(4):
        assert adm.connect("x") is None
    assert adm.admit("x", named=False) is None
    assert adm.admit("x", named=False) is None
    assert adm.admit("x", named=False) is TOO_MANY  # the last slot is reserved
    assert adm.admit("x", named=True) is None
    adm.disconnect("x", admitted=False)
    assert (adm.handshaking, adm.admitted) == (0, 3)


def test_without_auth_nothing_is_reserved() -> None:
    limits = AdmissionLimits(max_connections=2, reserved_for_authenticated=1)
    adm = Admission(limits, auth_required=False)
    adm.connect("x"), adm.connect("x")
    assert adm.admit("x", named=False) is None
    assert adm.admit("x", named=False) is None


def test_failed_authentications_slow_down_then_refuse_then_are_forgiven() -> None:
    limits = AdmissionLimits(auth_burst=4, auth_rate=1.0, auth_max_delay=2.0)
    adm = Admission(limits)
    assert adm.hello_delay("s", 0.0) == 0.0
    delays = []
    for _ in range(4):
        adm.auth_failed("s", 0.0)
        delays.append(adm.hello_delay("s", 0.0))
    assert delays[:3] == sorted(delays[:3]) and 0 < delays[0] < delays[2] <= 2.0
    assert delays[3] is None  # bucket empty: refused without looking at the token
    assert adm.hello_delay("other", 0.0) == 0.0  # another source is not affected
    assert adm.hello_delay("s", 1.0) is not None  # one failure forgiven after 1 s
    assert adm.hello_delay("s", 10.0) == 0.0  # all forgiven
    assert adm.table_sizes()[1] == 0  # and forgotten


def test_churn_is_limited_per_identity_and_other_requests_are_not_charged_churn() -> None:
    limits = AdmissionLimits(churn_burst=3, churn_rate=1.0, request_burst=100, request_rate=1)
    adm = Admission(limits)
    assert [adm.request("anon@1", 0.0, churn=True) for _ in range(4)] == [True] * 3 + [False]
    assert adm.request("anon@1", 0.0)  # a publish still goes through
    assert adm.request("alice", 0.0, churn=True)  # another identity has its own bucket
    assert adm.request("anon@1", 1.0, churn=True)


def test_a_refused_request_charges_nothing() -> None:
    adm = Admission(
        AdmissionLimits(churn_burst=1, churn_rate=0, request_burst=5, request_rate=1e-9)
    )
    assert adm.request("i", 0.0, churn=True)
    for _ in range(10):
        assert not adm.request("i", 0.0, churn=True)
    assert adm.request("i", 0.0, cost=4)  # the refused churn did not use request tokens


def test_a_batch_costs_its_records() -> None:
    adm = Admission(AdmissionLimits(request_burst=10, request_rate=1e-9))
    assert adm.request("i", 0.0, cost=10)
    assert not adm.request("i", 0.0, cost=1)


def test_forget_idle_keeps_only_buckets_still_in_use() -> None:
    adm = Admission(AdmissionLimits(churn_burst=2, churn_rate=1, request_burst=2, request_rate=1))
    adm.request("a", 0.0, churn=True)
    adm.auth_failed("s", 0.0)
    adm.forget_idle(0.5)
    assert adm.table_sizes()[1:] == (1, 1, 1)
    adm.forget_idle(100.0)
    assert adm.table_sizes() == (0, 0, 0, 0)


@given(
    st.floats(1, 100),
    st.floats(0, 10),
    st.lists(st.tuples(st.floats(0, 5), st.floats(0.1, 3)), max_size=30),
)
def test_a_bucket_never_gives_more_than_its_burst_plus_what_time_refilled(
    capacity: float, rate: float, steps: list[tuple[float, float]]
) -> None:
    bucket = Bucket(capacity, rate)
    now = given_out = 0.0
    for dt, amount in steps:
        now += dt
        if bucket.take(now, amount):
            given_out += amount
        assert 0 <= bucket.tokens <= capacity
    assert given_out <= capacity + rate * now + 1e-6


def test_the_log_sampler_passes_a_burst_per_interval_and_counts_the_rest() -> None:
    sampler = LogSampler(burst=2, interval=10.0)
    assert [sampler.allow("k", 0.0) for _ in range(5)] == [0, 0, None, None, None]
    assert sampler.allow("other", 1.0) == 0
    assert sampler.allow("k", 10.0) == 3  # the next line that passes tells how many were hidden


class AdmissionCounts(RuleBasedStateMachine):
    """Whatever the order of connects, admissions and closes, the pools never exceed their
    caps and the counts match a plain model."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = AdmissionLimits(
            max_connections=5, per_source=3, handshaking=4, reserved_for_authenticated=1
        )
        self.adm = Admission(self.limits, auth_required=True)
        self.open: list[tuple[str, bool]] = []  # (source, admitted)

    @rule(source=st.sampled_from("abc"))
    def connect(self, source: str) -> None:
        if self.adm.connect(source) is None:
            self.open.append((source, False))

    @precondition(lambda self: any(not a for _, a in self.open))
    @rule(data=st.data(), named=st.booleans())
    def admit(self, data: st.DataObject, named: bool) -> None:
        waiting = [i for i, (_, a) in enumerate(self.open) if not a]
        i = data.draw(st.sampled_from(waiting))
        if self.adm.admit(self.open[i][0], named=named) is None:
            self.open[i] = (self.open[i][0], True)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.open) - 1))
        source, admitted = self.open.pop(i)
        self.adm.disconnect(source, admitted=admitted)

    @invariant()
    def counts_match_and_stay_within_caps(self) -> None:
        admitted = sum(a for _, a in self.open)
        assert self.adm.admitted == admitted <= self.limits.max_connections
        assert self.adm.handshaking == len(self.open) - admitted <= self.limits.handshaking
        for source in "abc":
            mine = sum(1 for s, _ in self.open if s == source)
            assert self.adm.connections_of(source) == mine <= self.limits.per_source


TestAdmissionCounts = AdmissionCounts.TestCase


def test_a_request_rate_of_zero_means_no_request_limit_but_churn_stays_limited() -> None:
    adm = Admission(AdmissionLimits(request_burst=1, request_rate=0, churn_burst=1, churn_rate=0))
    assert all(adm.request("i", 0.0, cost=1000) for _ in range(100))
    assert adm.request("i", 0.0, churn=True)
    assert not adm.request("i", 0.0, churn=True)
    assert adm.table_sizes()[3] == 0  # and no request bucket is kept


def test_with_no_request_limit_churn_never_runs_out_of_request_tokens() -> None:
    adm = Admission(AdmissionLimits(request_burst=5, request_rate=0, churn_burst=10, churn_rate=1))
    assert all(adm.request("i", float(t), churn=True) for t in range(100))


def test_the_default_limits_let_a_fan_out_benchmark_through() -> None:
    """A thousand subscribers behind one address subscribing at once, and one anonymous
    publisher sending millions of messages a second, are what a push server is for: the
    default limits must not refuse them (the peer benchmark does exactly this)."""
    from pushwire.server import ServerConfig

    limits = ServerConfig(max_connections=4096).admission_limits()
    adm = Admission(limits)
    for _ in range(1001):
        assert adm.connect("127.0.0.1") is None
        assert adm.admit("127.0.0.1", named=False) is None
    assert all(adm.request("anon@127.0.0.1", 0.0, churn=True) for _ in range(1001))
    assert all(adm.request("anon@127.0.0.1", 0.0, cost=1000) for _ in range(10_000))
