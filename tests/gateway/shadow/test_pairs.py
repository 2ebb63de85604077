import multiprocessing
import re
import time
from multiprocessing.connection import Connection

from gateway.shadow.pairs import new_pair_id


def test_pair_ids_are_32_hex_digits_and_unique() -> None:
    ids = [new_pair_id() for _ in range(100_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", pair_id) for pair_id in ids)
    assert len(set(ids)) == len(ids)


def test_pair_ids_sort_in_the_order_they_were_made() -> None:
    # What keeps a store's inserts at the end of its primary-key index.
    ids = []
    for _ in range(20):
        ids.append(new_pair_id())
        time.sleep(0.001)
    assert sorted(ids) == ids


def _send_id(pipe: Connection) -> None:
    pipe.send(new_pair_id()[16:])  # the random half


def test_forked_workers_do_not_repeat_each_others_random_half() -> None:
    context = multiprocessing.get_context("fork")
    halves = []
    for _ in range(2):
        parent, child = context.Pipe()
        process = context.Process(target=_send_id, args=(child,))
        process.start()
        halves.append(parent.recv())
        process.join()
    assert halves[0] != halves[1]
