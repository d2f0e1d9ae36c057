"""The id ranges of `userns: true` hosts: arithmetic only (allocation is in the integration tests)."""

from __future__ import annotations

from netemu.runtime.userns import COUNT, FIRST_ID, SLOTS, IdRange


def test_a_range_maps_inside_ids_to_its_own_block():
    ids = IdRange(FIRST_ID + 3 * COUNT)
    assert ids.arg() == f"{FIRST_ID + 3 * COUNT}:65536"
    assert ids.outside(0) == ids.base and ids.outside(1000) == ids.base + 1000
    assert ids.outside(70000) == ids.base  # beyond the range: the host's root
    assert ids.base in ids and ids.base + COUNT - 1 in ids
    assert ids.base - 1 not in ids and ids.base + COUNT not in ids


def test_the_last_slot_stays_below_the_kernel_s_invalid_id():
    last = IdRange(FIRST_ID + (SLOTS - 1) * COUNT)
    assert last.base + last.count - 1 < 2**32 - 1
    assert IdRange(FIRST_ID + SLOTS * COUNT).base + COUNT - 1 >= 2**32 - 1
