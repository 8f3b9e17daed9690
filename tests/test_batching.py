import numpy as np
from hypothesis import given, strategies as st

from lm.data.batching import batchify, count_windows, windows


def test_last_target_of_a_window_is_first_input_of_the_next_in_every_stream():
    streams = batchify(np.arange(1000, dtype=np.int32), 4)
    pairs = list(windows(streams, bptt=7))
    assert len(pairs) == count_windows(streams.shape[1], 7)
    for (_, targets), (inputs, _) in zip(pairs, pairs[1:]):
        assert (targets[:, -1] == inputs[:, 0]).all()


@given(n=st.integers(2, 500), batch=st.integers(1, 8), bptt=st.integers(1, 40))
def test_windows_cover_every_stream_position_exactly_once(n, batch, bptt):
    ids = np.arange(n, dtype=np.int32)
    if n // batch < 2:
        return
    streams = batchify(ids, batch)  # [batch, length]
    seen = np.concatenate([inputs.numpy() for inputs, _ in windows(streams, bptt)], axis=1)
    targets = np.concatenate([t.numpy() for _, t in windows(streams, bptt)], axis=1)
    assert (seen == streams[:, :-1]).all()
    assert (targets == streams[:, 1:]).all()


def test_windows_resume_from_a_given_window():
    streams = batchify(np.arange(200, dtype=np.int32), 2)
    all_windows = list(windows(streams, 10))
    later = list(windows(streams, 10, start=3))
    assert len(later) == len(all_windows) - 3
    assert (later[0][0] == all_windows[3][0]).all()
