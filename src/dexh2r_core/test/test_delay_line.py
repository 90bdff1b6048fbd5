"""DelayLine: the compute latency of the in-process closed loop, the cell's command delay."""

from dexh2r_core.delay_line import DelayLine


def test_messages_arrive_in_posting_order_stamped_with_their_arrival():
    """Each message is handed over when the clock reaches its arrival, in posting order (a
    shorter delay never overtakes), called with its arrival time; one whose time has come when
    nothing waits is handed over at once; clear() drops what is on its way."""
    got = []
    line = DelayLine()
    line.post(0.0, 0.0, lambda at: got.append(("now", at)))  # no delay: delivered at once
    assert got == [("now", 0.0)] and len(line) == 0
    line.post(0.07, 0.0, lambda at: got.append(("a", at)))
    line.post(0.05, 0.01, lambda at: got.append(("b", at)))  # a shorter delay never overtakes
    line.post(0.02, 0.02, lambda at: got.append(("c", at)))  # due, but queued behind a and b
    line.deliver(0.06)
    assert got == [("now", 0.0)]
    line.deliver(0.07)
    assert got == [("now", 0.0), ("a", 0.07), ("b", 0.07), ("c", 0.07)]
    line.post(0.2, 0.1, lambda at: got.append(("d", at)))
    line.clear()
    line.deliver(1.0)
    assert got[-1] == ("c", 0.07)
