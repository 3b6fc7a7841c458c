"""watchdog.guard, the client agents import: verdicts, cache, breaker, offline policy, caps."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, DaemonThread, http_json
from watchdog.guard import ActionDenied, AgentHalted, CircuitBreaker, Guard, verify_signature


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def guard_factory() -> Iterator[Callable[..., Guard]]:
    made: list[Guard] = []

    def make(url: str, **kw: object) -> Guard:
        kw.setdefault("timeout_s", 10.0)
        g = Guard(url, **kw)  # type: ignore[arg-type]
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


class RefusingServer:
    """Accepts TCP connections and closes them at once, counting how many it saw."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_guard_imports_only_the_standard_library() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import watchdog.guard; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'watchdog'))"
    )
    # -I -S: no site-packages at all, so any third-party import would fail here.
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['watchdog', 'watchdog.guard']"


def test_circuit_breaker_opens_after_five_and_probes_after_sixty_seconds() -> None:
    clock = Clock()
    b = CircuitBreaker(clock=clock)
    for _ in range(4):
        b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.t += 59.9
    assert not b.allow()
    clock.t += 0.1
    assert b.state == "half-open"
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure()  # the probe failed: open again for another 60 s
    assert b.state == "open" and not b.allow()
    clock.t += 60
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_unreachable_fails_open_for_steps_closed_for_risky_and_breaker_stops_calls(
    guard_factory: Callable[..., Guard],
) -> None:
    server = RefusingServer()
    try:
        g = guard_factory(server.url, agent="a", cache="off", risky_tools=["send_*"])
        d = g.check(tool="search")
        assert (d.verdict, d.source) == ("allow", "offline")
        with pytest.raises(ActionDenied) as err:
            g.check(tool="send_email")
        assert err.value.source == "offline" and "fails closed" in err.value.reason
        with pytest.raises(ActionDenied):
            g.check(tool="wire_money", risky=True)
        for _ in range(2):
            g.check()
        assert server.accepted == 5 and g.breaker.state == "open"
        for _ in range(20):
            assert g.check().source == "offline"
        assert server.accepted == 5  # the open breaker made no further calls
    finally:
        server.close()


def test_local_caps_hold_without_watchdog(guard_factory: Callable[..., Guard]) -> None:
    clock = Clock()
    g = guard_factory(
        "http://127.0.0.1:9", agent="a", cache="off", max_steps=3, max_cost_usd=1.0,
        max_wall_s=60, clock=clock,
    )  # fmt: skip
    g.check(est_cost_usd=0.4)
    g.check(est_cost_usd=0.4)
    with pytest.raises(AgentHalted) as err:
        g.check(est_cost_usd=0.4)
    assert err.value.source == "local" and err.value.answer["cap"] == "max_cost_usd"
    g.check(est_cost_usd=0.1)
    with pytest.raises(AgentHalted) as err:
        g.check()
    assert err.value.answer["cap"] == "max_steps"
    g2 = guard_factory("http://127.0.0.1:9", agent="a", cache="off", max_wall_s=60, clock=clock)
    g2.check()
    clock.t += 61
    with pytest.raises(AgentHalted) as err:
        g2.check()
    assert err.value.answer["cap"] == "max_wall_s"


def test_wrong_token_is_treated_as_unreachable(
    daemon_factory: Callable[..., DaemonThread], guard_factory: Callable[..., Guard]
) -> None:
    d = daemon_factory(api_token="right")
    g = guard_factory(d.url, agent="a", token="wrong", cache="off")
    assert g.check(tool="search").source == "offline"
    with pytest.raises(ActionDenied):
        g.check(tool="rm", risky=True)
    ok = guard_factory(d.url, agent="a", token="right", cache="off")
    assert ok.check(tool="search").source == "watchdog"


def test_sticky_kill_is_obeyed_at_start(
    daemon: DaemonThread, guard_factory: Callable[..., Guard]
) -> None:
    http_json("POST", daemon.url + "/api/v1/kill", {"agent": "a", "reason": "stay down"})
    g = guard_factory(daemon.url, agent="a")
    with pytest.raises(AgentHalted) as err:
        g.check(tool="anything")
    assert "stay down" in err.value.reason and err.value.verdict == "kill"


def test_stream_kill_reaches_the_cache_and_resume_clears_it(
    daemon: DaemonThread, guard_factory: Callable[..., Guard]
) -> None:
    g = guard_factory(daemon.url, agent="a", session="s")
    halts: list[AgentHalted] = []
    g.on_halt(halts.append)
    g.check()
    http_json("POST", daemon.url + "/api/v1/kill", {"session": "s", "reason": "loop"})
    assert g.halted.wait(30)
    assert halts and halts[0].source == "stream"
    with pytest.raises(AgentHalted) as err:
        g.check()
    assert err.value.source == "cache"  # answered locally, no round trip
    http_json("POST", daemon.url + "/api/v1/resume", {"session": "s"})
    with g._changed:
        assert g._changed.wait_for(lambda: not g.halted.is_set(), 30)
    assert g.check().verdict == "allow"


def test_poll_cache_sees_a_kill_too(
    daemon: DaemonThread, guard_factory: Callable[..., Guard]
) -> None:
    g = guard_factory(daemon.url, agent="a", cache="poll", poll_interval_s=0.05)
    g.check()
    http_json("POST", daemon.url + "/api/v1/kill", {"agent": "a"})
    assert g.halted.wait(30)


def test_pause_blocks_until_resumed(
    daemon: DaemonThread, guard_factory: Callable[..., Guard]
) -> None:
    http_json("POST", daemon.url + "/api/v1/pause", {"agent": "a", "reason": "look first"})
    g = guard_factory(daemon.url, agent="a")
    paused = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "paused" in record.getMessage():
                paused.set()

    spy = Spy()
    logging.getLogger("watchdog.guard").addHandler(spy)
    try:
        result: list[str] = []
        t = threading.Thread(target=lambda: result.append(g.check(tool="x").verdict))
        t.start()
        assert paused.wait(30)
        assert not result  # still blocked inside check()
        http_json("POST", daemon.url + "/api/v1/resume", {"agent": "a"})
        t.join(30)
        assert result == ["allow"]
    finally:
        logging.getLogger("watchdog.guard").removeHandler(spy)


def test_pause_that_never_lifts_halts(
    daemon: DaemonThread, guard_factory: Callable[..., Guard]
) -> None:
    http_json("POST", daemon.url + "/api/v1/pause", {"agent": "a"})
    g = guard_factory(
        daemon.url, agent="a", pause_max_wait_s=0.2, cache="off", poll_interval_s=0.05
    )
    with pytest.raises(AgentHalted) as err:
        g.check()
    assert "paused" in err.value.reason


def test_decorator_and_context_manager(
    daemon_factory: Callable[..., DaemonThread], guard_factory: Callable[..., Guard]
) -> None:
    d = daemon_factory(budgets={"per_session_usd": 1.0})
    g = guard_factory(d.url, agent="a", session="s", cache="off")
    calls: list[tuple[str, int]] = []

    @g.tool(est_cost_usd=0.0)
    def lookup(city: str, days: int = 1) -> str:
        calls.append((city, days))
        return f"sunny in {city}"

    @g.tool("async_lookup")
    async def alookup(city: str) -> str:
        return city.upper()

    assert lookup("Paris", days=3) == "sunny in Paris"
    assert asyncio.run(alookup("oslo")) == "OSLO"
    # A failing block gives its reservation back...
    with pytest.raises(RuntimeError), g.step(tool="llm", est_cost_usd=0.8):
        raise RuntimeError("provider down")
    with g.step(tool="llm", est_cost_usd=0.8) as step:
        step.cost_usd = 0.01
    # ...a successful one keeps it until its span settles it: no room for another 0.8.
    with pytest.raises(ActionDenied) as err:
        g.check(tool="llm", est_cost_usd=0.8)
    assert err.value.answer["budget"]["cap"] == "per_session_usd"
    http_json("POST", d.url + "/api/v1/kill", {"agent": "a"})
    with pytest.raises(AgentHalted):
        lookup("Rome")
    assert calls == [("Paris", 3)]  # the killed call never ran
    assert g.steps == 4 and round(g.spent_usd, 6) == 0.01  # the failed block cost nothing


def test_verify_signature() -> None:
    import hashlib
    import hmac

    body = b'{"verdict":"kill"}'
    sig = "sha256=" + hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert verify_signature("k", body, "1700000000", sig, now=1700000010)
    assert not verify_signature("k", body + b" ", "1700000000", sig, now=1700000010)
    assert not verify_signature("k", body, "1700000000", sig, now=1700009999)  # replayed late
    assert not verify_signature("k", body, "not-a-time", sig)
