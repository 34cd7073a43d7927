"""Sound-event timeline, the pure stage: frames to events, calibration, summary, cues and chart."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from core.chart import timeline_png
from core.cues import parse_srt, parse_vtt, to_json, to_srt, to_vtt
from core.timeline import (
    Event,
    TimelineParams,
    calibrate,
    events,
    frame_cells,
    median_filter,
    summary,
    window_starts,
)

# Regular frames, no smoothing or length rules: each test switches on only what it checks.
BARE = TimelineParams(
    window_seconds=2.0,
    hop_seconds=0.5,
    on_threshold=0.7,
    off_threshold=0.4,
    median_frames=1,
    min_event_seconds=0.0,
    merge_gap_seconds=0.0,
    max_labels_per_moment=5,
)


def column(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[:, None]


def spans(found: list[Event]) -> list[tuple[str, float, float]]:
    return [(e.label, round(e.start, 6), round(e.end, 6)) for e in found]


# --- frames and cells


def test_window_starts_hop_then_flush_with_the_end() -> None:
    assert window_starts(1.5, BARE).tolist() == [0.0]
    assert window_starts(2.0, BARE).tolist() == [0.0]
    assert window_starts(4.0, BARE).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert window_starts(4.2, BARE).tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.2])
    starts = window_starts(600.0, TimelineParams())
    assert len(starts) == 1197 and starts[-1] + 2.0 == pytest.approx(600.0)


def test_cells_tile_the_clip_around_window_centres() -> None:
    cells = frame_cells(5, BARE, duration=4.0)  # centres 1.0 .. 3.0
    assert cells.tolist() == [[0.0, 1.25], [1.25, 1.75], [1.75, 2.25], [2.25, 2.75], [2.75, 4.0]]
    flush = frame_cells(6, BARE, duration=4.2)  # last centre 3.2, 0.2 s after the one before
    assert np.allclose(flush[-2:], [[2.75, 3.1], [3.1, 4.2]])
    assert frame_cells(1, BARE, duration=1.5).tolist() == [[0.0, 1.5]]
    with pytest.raises(ValueError):
        frame_cells(4, BARE, duration=4.0)


# --- events from constructed scores


def test_hysteresis_starts_at_on_and_lasts_while_above_off() -> None:
    scores = column([0.1, 0.6, 0.8, 0.5, 0.45, 0.3, 0.6, 0.65, 0.1, 0.1, 0.1])
    found = events(scores, ["dog"], BARE)
    # on at frame 2 (0.8), held through 0.5 and 0.45, off at 0.3; 0.6 and 0.65 never reach on again
    assert spans(found) == [("dog", 1.75, 3.25)]
    cells = frame_cells(len(scores), BARE)
    assert (found[0].start, found[0].end) == (cells[2, 0], cells[4, 1])
    assert found[0].score == pytest.approx(np.mean([0.8, 0.5, 0.45]))


def test_median_filter_removes_a_one_frame_blip_and_keeps_a_real_run() -> None:
    assert median_filter(column([0, 0, 1, 0, 0]), 3).ravel().tolist() == [0, 0, 0, 0, 0]
    assert median_filter(column([0, 1, 1, 0, 0]), 3).ravel().tolist() == [0, 1, 1, 0, 0]
    blip = column([0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1])
    assert len(events(blip, ["x"], BARE)) == 2
    smoothed = events(blip, ["x"], TimelineParams(**{**BARE.__dict__, "median_frames": 3}))
    assert spans(smoothed) == [("x", 3.75, 5.25)]


def test_runs_closer_than_the_merge_gap_become_one_event() -> None:
    scores = column([0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.1, 0.1])
    apart = events(scores, ["x"], BARE)
    assert len(apart) == 3
    merged = events(scores, ["x"], TimelineParams(**{**BARE.__dict__, "merge_gap_seconds": 1.0}))
    # the 0.5 s gap closes, the 1.5 s gap stays
    assert spans(merged) == [("x", 0.0, 3.25), ("x", 4.75, 5.75)]
    assert merged[0].score == pytest.approx(np.mean([0.9, 0.9, 0.1, 0.9, 0.9]))


def test_events_shorter_than_the_minimum_are_dropped() -> None:
    scores = column([0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1])
    assert len(events(scores, ["x"], BARE)) == 2
    kept = events(scores, ["x"], TimelineParams(**{**BARE.__dict__, "min_event_seconds": 1.0}))
    assert spans(kept) == [("x", 3.75, 5.25)]


def test_at_most_max_labels_per_moment_the_strongest() -> None:
    frames = 8
    scores = np.stack([np.full(frames, 0.95), np.full(frames, 0.8), np.full(frames, 0.9)], axis=1)
    scores[4:, 1] = 0.99  # label b overtakes from frame 4
    labels = ["a", "b", "c"]
    assert len(events(scores, labels, BARE)) == 3
    two = events(scores, labels, TimelineParams(**{**BARE.__dict__, "max_labels_per_moment": 2}))
    assert spans(two) == [("a", 0.0, 5.5), ("c", 0.0, 2.75), ("b", 2.75, 5.5)]


def test_events_are_sorted_by_start_then_label_and_use_the_real_duration() -> None:
    scores = np.zeros((6, 3))
    scores[3:, 2] = scores[3:, 0] = scores[:2, 1] = 0.9
    found = events(scores, ["b", "z", "a"], BARE, duration=4.2)
    assert [(e.label, e.start) for e in found] == [("z", 0.0), ("a", 2.25), ("b", 2.25)]
    assert found[-1].end == 4.2
    assert events(np.zeros((0, 2)), ["a", "b"], BARE) == []
    with pytest.raises(ValueError):
        events(np.zeros((3, 2)), ["a"], BARE)


def test_calibration_is_per_label_against_a_frame_baseline_not_a_softmax() -> None:
    sims = np.array([[0.8, 0.1, 0.0, 0.1], [0.7, 0.6, 0.1, 0.0], [0.1, 0.1, 0.0, 0.2]])
    probs = calibrate(sims, logit_scale=30.0)
    assert probs.shape == sims.shape and np.all((probs > 0) & (probs < 1))
    baseline = np.quantile(sims, 0.75, axis=1, keepdims=True)
    assert np.allclose(probs, 1 / (1 + np.exp(-30.0 * (sims - baseline))))
    assert probs[0, 0] > 0.99 and probs[0, 1] < 0.5
    vocabulary = np.array([[0.1, 0.0, 0.2, 0.1, 0.1], [0.0, 0.1, 0.1, 0.2, 0.1], [0.1, 0.1, 0.0, 0.1, 0.2]])
    broad = calibrate(sims, logit_scale=30.0, reference=vocabulary)
    assert broad[1, 0] > 0.99 and broad[1, 1] > 0.99  # two sounds at once: both high, not splitting one unit
    alone = calibrate(sims[:, :1], logit_scale=30.0, reference=vocabulary)
    assert np.array_equal(alone[:, 0], broad[:, 0])  # a label's score doesn't depend on the others asked for
    assert alone[:, 0].round(2).tolist() == [1.0, 1.0, 0.5]
    against = calibrate(sims, logit_scale=30.0, reference=np.full(3, 0.2))  # a background prompt
    assert np.allclose(against, 1 / (1 + np.exp(-30.0 * (sims - 0.2))))
    with pytest.raises(ValueError):
        calibrate(sims[:, :2], logit_scale=30.0)


def test_with_rivals_a_label_clearly_beaten_by_another_one_asked_for_loses_but_a_tie_keeps_both() -> None:
    vocabulary = np.zeros((3, 5))  # a reference that every label stands out above
    sims = np.array([[0.2, 0.08, 0.0], [0.2, 0.2, 0.0], [0.1, -0.1, 0.3]])
    plain = calibrate(sims, logit_scale=30.0, reference=vocabulary)
    ranked = calibrate(sims, logit_scale=30.0, reference=vocabulary, rivals=True)
    assert plain[0, 1] > 0.9 and ranked[0, 1] < 0.1  # beaten by 0.12: out
    assert ranked[2, 0] < 0.01 and ranked[2, 2] == plain[2, 2]  # the winner keeps its score
    assert np.array_equal(ranked[1, :2], plain[1, :2])  # heard together, as loud: both as if asked alone
    best_other = np.array([[0.08, 0.2, 0.2], [0.2, 0.2, 0.2], [0.3, 0.3, 0.1]])
    assert np.allclose(ranked, np.minimum(plain, np.minimum(1, 2 / (1 + np.exp(-30.0 * (sims - best_other))))))
    alone = calibrate(sims[:, :1], logit_scale=30.0, reference=vocabulary, rivals=True)
    assert np.array_equal(alone, plain[:, :1])  # a label asked for alone has no rival


def test_params_reject_inconsistent_settings() -> None:
    for bad in ({"off_threshold": 0.9}, {"median_frames": 4}, {"hop_seconds": 0.0}, {"max_labels_per_moment": 0}):
        with pytest.raises(ValueError):
            TimelineParams(**bad)  # type: ignore[arg-type]


def test_summary_names_the_dominant_sound_and_times_the_rest() -> None:
    found = [
        Event("speech", 0.0, 700.0, 0.9),
        Event("dog barking", 190.2, 205.0, 0.8),
        Event("dog barking", 722.0, 728.6, 0.7),
        Event("speech", 720.0, 900.0, 0.9),
    ]
    assert summary(found, 900.0) == "mostly speech; dog barking at 3:10–3:25 and 12:02–12:09"
    assert summary([], 10.0) == "nothing recognised"
    many = [Event("knock", float(t), t + 1.0, 0.8) for t in range(0, 50, 10)]
    assert summary(many, 3600.0) == "knock at 0:00–0:01, 0:10–0:11 and 0:20–0:21 (+2 more)"
    assert summary([Event("bell", 3599.0, 3725.0, 0.8)], 7200.0) == "bell at 59:59–1:02:05"


# --- cues and JSON


CUES = [
    Event("a high tone", 0.0, 4.25, 0.91),
    Event("white noise", 3.5, 3723.4567, 0.8),  # overlaps the one before, runs past an hour
    Event("glass <break> & ring --> x", 61.0011, 62.9994, 0.5),
]


def test_srt_cues_are_numbered_from_one_and_read_back_within_a_millisecond() -> None:
    text = to_srt(CUES)
    blocks = text.strip().split("\n\n")
    assert [b.split("\n")[0] for b in blocks] == ["1", "2", "3"]
    assert blocks[1].split("\n")[1] == "00:00:03,500 --> 01:02:03,457"
    parsed = parse_srt(text)
    assert len(parsed) == len(CUES)
    for (start, end, label), event in zip(parsed, CUES, strict=True):
        assert abs(start - event.start) <= 0.0005 and abs(end - event.end) <= 0.0005
        assert "-->" not in label
    assert [p[2] for p in parsed[:2]] == ["a high tone", "white noise"]
    assert parse_srt(text.replace("\n", "\r\n")) == parsed


def test_vtt_has_a_header_dotted_millis_and_escaped_text() -> None:
    text = to_vtt(CUES)
    assert text.startswith("WEBVTT\n\n")
    assert "00:01:01.001 --> 00:01:02.999" in text
    assert "&lt;break&gt; &amp; ring" in text and "<break>" not in text
    parsed = parse_vtt(text)
    assert [p[2] for p in parsed] == ["a high tone", "white noise", "glass <break> & ring -> x"]
    for (start, end, _), event in zip(parsed, CUES, strict=True):
        assert abs(start - event.start) <= 0.0005 and abs(end - event.end) <= 0.0005
    with pytest.raises(ValueError):
        parse_vtt(to_srt(CUES))


def test_json_is_plain_data_of_the_events() -> None:
    data = to_json(CUES, 3725.0)
    assert json.loads(json.dumps(data)) == data
    assert data["duration"] == 3725.0 and len(data["events"]) == 3
    first = data["events"][1]
    assert set(first) == {"label", "start", "end", "score"}
    assert first["label"] == "white noise" and abs(first["end"] - 3723.4567) <= 0.0005


# --- chart


def test_chart_is_a_png_of_the_expected_size() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = [f"label {i} with a long name that will not fit in the column" for i in range(12)]
    scores = rng.random((len(window_starts(95.0, TimelineParams())), len(labels)))
    png = timeline_png(scores, labels, 95.0)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1000, 60 + 8 * 40)
    three = Image.open(io.BytesIO(timeline_png(scores[:, :3], labels[:3], 95.0, top=8)))
    assert three.size == (1000, 60 + 3 * 40)
    pixels = np.asarray(three.convert("L"), dtype=np.float64)
    assert pixels[10:130, 200:980].std() > 10  # the scores are drawn, not a blank plot
