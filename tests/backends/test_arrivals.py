import gc

from backends.arrivals import Arrivals


def test_pieces_come_back_in_order_with_their_times() -> None:
    arrivals = Arrivals()
    arrivals.add(2.5, b"data: a\n\n")
    arrivals.add(2.75, b"data: b\n\n")
    assert list(arrivals) == [(2.5, b"data: a\n\n"), (2.75, b"data: b\n\n")]
    assert arrivals.pieces == [b"data: a\n\n", b"data: b\n\n"]


def test_keeping_pieces_leaves_the_collector_nothing_new_to_count() -> None:
    # A tuple per piece was one more tracked object per event: enough of them set off the
    # collections that stalled streams at engine steps.
    arrivals = Arrivals()
    pieces = [b"data: %d\n\n" % i for i in range(10_000)]
    gc.disable()
    try:
        before = gc.get_count()[0]
        for at, piece in enumerate(pieces):
            arrivals.add(float(at), piece)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 10  # the array's and the list's own growth allocate no tracked objects
    assert len(arrivals.pieces) == len(arrivals.times) == 10_000
