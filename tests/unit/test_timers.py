"""The timer queue holds only what is armed (issue 10, finding 13: it leaked every cancelled
handle that had already fired, so a door running for months grew without end)."""

from __future__ import annotations

from intercom.sip.timers import Timers
from tests.unit.sipnet import Net, ScriptedPeer, make_agent, reply


def test_cancelling_a_fired_or_unknown_handle_keeps_nothing() -> None:
    timers = Timers()
    fired: list[float] = []
    for i in range(1000):
        handle = timers.call_at(float(i), fired.append)
        timers.run_due(float(i))
        timers.cancel(handle)  # what every transaction does when it ends after its timer fired
        timers.cancel(10_000 + i)  # never armed
        timers.cancel(None)
    assert len(fired) == 1000
    assert len(timers) == 0
    assert timers.footprint == 0


def test_cancelled_future_timers_do_not_pile_up() -> None:
    timers = Timers()
    keep = timers.call_at(1e9, lambda now: None)
    for i in range(10_000):
        timers.cancel(timers.call_at(1000.0 + i, lambda now: None))
    assert len(timers) == 1
    assert timers.footprint < 200  # the heap is compacted, not left with 10,000 dead entries
    assert timers.next_deadline() == 1e9
    timers.cancel(keep)
    assert timers.next_deadline() is None and timers.footprint == 0


def test_order_and_cancel_still_work() -> None:
    timers = Timers()
    got: list[str] = []
    timers.call_at(2.0, lambda now: got.append("b"))
    a = timers.call_at(1.0, lambda now: got.append("a"))
    timers.call_at(3.0, lambda now: got.append("c"))
    timers.cancel(a)
    assert timers.run_due(2.5) == 1
    assert got == ["b"]
    assert timers.next_deadline() == 3.0


def test_a_thousand_calls_leave_an_empty_timer_queue() -> None:
    net = Net()
    door = net.add(make_agent(5062, 5060))
    pbx = ScriptedPeer(net, ("127.0.0.1", 5060))
    for _ in range(1000):
        door.call(["621"], net.now)
        net.settle()
        (invite,) = pbx.take_requests("INVITE")
        pbx.send(reply(invite, 486, to_tag="busy"), ("127.0.0.1", 5062))
        net.run(net.now + 40.0)  # Timer D and every other timer run out
        pbx.take()
    assert door.calls == {} and door.txns.clients == {}
    assert len(door.timers) == 0
    assert door.timers.footprint == 0
