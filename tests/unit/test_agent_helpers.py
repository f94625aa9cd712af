"""Pure helpers of the Faust agents."""

from __future__ import annotations

from thurrock_streams.agents.readings import offset_gaps


def test_offset_gaps_are_forward_jumps_only() -> None:
    expected: dict[tuple[str, int], int] = {}
    batch = [("r", 0, 5), ("r", 0, 6), ("r", 1, 0), ("r", 0, 9), ("r", 0, 7), ("r", 0, 10),
             ("r", 1, 1), ("r", 1, 4)]
    # the first offset of a partition sets the start; 7 after 9 is a replay
    assert offset_gaps(expected, batch) == [("r", 0, 7, 8), ("r", 1, 2, 3)]
    assert expected == {("r", 0): 11, ("r", 1): 5}
    assert offset_gaps(expected, [("r", 0, 3), ("r", 0, 11)]) == []
