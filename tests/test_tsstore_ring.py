"""The block ring of ts-store's fixed footprint (spec §5.4), as pure bookkeeping."""

from __future__ import annotations

import random

import pytest

from tsnet.protocols.tsstore.ring import Ring, RingError, valid_block_size


def test_first_record_opens_block_zero_and_offsets_follow_the_headers() -> None:
    ring = Ring(1024, 4096)
    assert ring.active_blocks == 1
    p = ring.place(1000, 21)
    assert (p.block, p.reclaim_ns) == (0, None)
    assert ring.write_offset == 48 + 21
    ring.place(1001, 10)
    assert ring.write_offset == 48 + 21 + 24 + 10
    assert (ring.head, ring.tail, ring.active_blocks) == (0, 0, 1)


def test_small_blocks_take_one_record_each_and_the_fifth_reclaims_the_first() -> None:
    ring = Ring(4, 64)  # the spec's example: every record of <= 16 bytes gets a block
    blocks = [ring.place(t, 16) for t in (1, 2, 3, 4)]
    assert [p.block for p in blocks] == [0, 1, 2, 3]
    assert all(p.reclaim_ns is None for p in blocks)
    fifth = ring.place(5, 16)
    assert (fifth.block, fifth.reclaim_ns) == (0, 1)
    assert (ring.head, ring.tail) == (0, 1)
    assert ring.active_blocks == 4


def test_records_pack_into_a_block_while_they_fit() -> None:
    ring = Ring(8, 256)  # 232 usable bytes after the block header
    got = [ring.place(t, 40).block for t in range(1, 8)]
    # 24 + 64 + 64 + 64 = 216 <= 256; the fourth 64-byte object does not fit
    assert got == [0, 0, 0, 1, 1, 1, 2]


def test_a_record_bigger_than_a_block_spans_and_the_next_packs_behind_it() -> None:
    ring = Ring(8, 256)
    ring.place(1, 10)
    big = ring.place(2, 500)  # 208 in the first block, then 232 a block: 3 blocks
    assert big.block == 1
    assert ring.head == 3
    after = ring.place(3, 4)
    assert after.block == 3  # behind the spanning record's last chunk
    assert ring.active_blocks == 4


def test_reclaiming_a_spanning_record_frees_its_continuations() -> None:
    ring = Ring(4, 64)  # 40 usable bytes a block, 16 in the first
    span = ring.place(1, 16 + 40 + 1)  # three blocks: 0, 1, 2
    assert (span.block, ring.head) == (0, 2)
    p = ring.place(2, 10)
    assert p.block == 3
    p = ring.place(3, 10)  # needs block 0: reclaims the record and its continuations
    assert (p.block, p.reclaim_ns) == (0, 1)
    assert ring.tail == 3


def test_order_size_and_reset() -> None:
    ring = Ring(2, 64)
    with pytest.raises(RingError, match=r"^invalid timestamp$"):
        ring.place(0, 1)
    ring.place(10, 1)
    for t in (10, 9):
        with pytest.raises(RingError, match=r"^timestamp must be greater than newest entry$"):
            ring.place(t, 1)
    with pytest.raises(RingError, match="capacity"):
        ring.place(11, ring.capacity + 1)
    ring.place(11, ring.capacity)  # exactly the whole ring: allowed
    ring.reset()
    assert ring.place(5, 1).block == 0


@pytest.mark.parametrize("seed", range(8))
def test_replay_of_the_survivors_rebuilds_the_same_ring(seed: int) -> None:
    rng = random.Random(seed)
    blocks, size = rng.choice([(4, 64), (16, 128), (64, 256)]), 0
    live = Ring(*blocks)
    stored: list[tuple[int, int, int]] = []
    for t in range(1, 400):
        size = rng.choice([0, 1, 10, 40, 100, 300, 700])
        if size > live.capacity:
            continue
        p = live.place(t, size)
        stored.append((t, size, p.block))
        if p.reclaim_ns is not None:
            stored = [r for r in stored if r[0] > p.reclaim_ns]
        again = Ring.replay(*blocks, stored)
        assert (again.head, again.tail, again.write_offset, again.newest_ns) == \
            (live.head, live.tail, live.write_offset, live.newest_ns)
    nxt = (live.place(10_000, 5), Ring.replay(*blocks, stored).place(10_000, 5))
    assert nxt[0] == nxt[1]


def test_block_sizes() -> None:
    assert [n for n in (32, 63, 64, 96, 128, 4096) if valid_block_size(n)] == [64, 128, 4096]
