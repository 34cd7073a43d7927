"""Landmark fingerprints: identification, offsets, negatives, removal, blobs and determinism, on synthesised audio."""

from __future__ import annotations

import numpy as np
import pytest

from core import fingerprint as fpr

SR = 48000


def sound(seed: int, seconds: float = 5.0) -> np.ndarray:
    """A distinct sound: decaying inharmonic tones, noise bursts and clicks at random times.

    No linear sweeps: two sweeps of about the same rate are the same sound to a landmark fingerprint (any stretch
    of one is a stretch of the other), so they would not make a fair negative.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = np.zeros(n)
    for _ in range(12):
        start, partials = rng.uniform(0, seconds - 0.3), rng.uniform(100, 3500, 3)
        env = np.where(t >= start, np.exp(-(t - start) * rng.uniform(3, 12)), 0.0)
        y += env * np.sum([np.sin(2 * np.pi * f * t) for f in partials], axis=0)
    for _ in range(4):
        start = rng.uniform(0, seconds - 0.2)
        env = np.where(t >= start, np.exp(-(t - start) * 30), 0.0)
        y += 0.5 * env * rng.standard_normal(n)
    y[rng.integers(0, n, 6)] += 2.0
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def with_noise(x: np.ndarray, snr_db: float, seed: int = 99) -> np.ndarray:
    """x plus white noise at snr_db below its mean power."""
    noise = np.random.default_rng(seed).standard_normal(len(x))
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


@pytest.fixture(scope="module")
def library() -> tuple[fpr.FingerprintIndex, dict[int, np.ndarray]]:
    sounds = {10 + i: sound(i) for i in range(8)}
    index = fpr.FingerprintIndex()
    for sample_id, x in sounds.items():
        index.add(sample_id, fpr.fingerprint(x))
    return index, sounds


def identify(index: fpr.FingerprintIndex, x: np.ndarray) -> fpr.Match | None:
    return fpr.decide(index.match(fpr.query_fingerprint(x)))


@pytest.mark.parametrize(("sample_id", "start"), [(13, 1.2345), (16, 0.0071), (17, 2.9)])
def test_clean_excerpt_is_found_at_its_offset(library, sample_id: int, start: float) -> None:
    index, sounds = library
    x = sounds[sample_id]
    found = identify(index, x[int(start * SR) : int((start + 2) * SR)])
    assert found is not None and found.sample_id == sample_id
    assert abs(found.offset - start) <= fpr.FRAME_SECONDS
    assert 0.5 <= found.confidence <= 1.0


def test_query_starting_before_the_sample_has_a_negative_offset(library) -> None:
    index, sounds = library
    x = np.concatenate([np.zeros(int(0.75 * SR), np.float32), sounds[11][: 2 * SR]])
    found = identify(index, x)
    assert found is not None and found.sample_id == 11
    assert abs(found.offset + 0.75) <= fpr.FRAME_SECONDS


def test_noisy_excerpt_is_identified(library) -> None:
    index, sounds = library
    for sample_id in (12, 15):
        x = sounds[sample_id][int(1.5 * SR) : int(3.5 * SR)]
        found = identify(index, with_noise(x, 10.0, seed=sample_id))
        assert found is not None and found.sample_id == sample_id
        assert abs(found.offset - 1.5) <= 2 * fpr.FRAME_SECONDS


def test_sounds_not_in_the_library_and_silence_are_not_named(library) -> None:
    index, _ = library
    for seed in (100, 101, 102):
        assert index.match(fpr.query_fingerprint(sound(seed, 3.0)))  # chance votes exist...
        assert identify(index, sound(seed, 3.0)) is None  # ...but don't reach a decision
    assert identify(index, with_noise(np.full(3 * SR, 1e-3, np.float32), -20.0)) is None  # white noise alone
    silence = np.zeros(3 * SR, np.float32)
    assert len(fpr.fingerprint(silence)) == 0
    assert index.match(fpr.query_fingerprint(silence)) == []
    assert fpr.decide([]) is None


def test_removed_sample_is_unmatchable_and_can_come_back(library) -> None:
    _, sounds = library
    index = fpr.FingerprintIndex()
    for sample_id in (1, 2, 3):
        index.add(sample_id, fpr.fingerprint(sounds[10 + sample_id]))
    query = sounds[12][SR : 3 * SR]
    assert identify(index, query) is not None
    index.remove(2)
    assert len(index) == 2 and 2 not in index
    assert all(m.sample_id != 2 for m in index.match(fpr.query_fingerprint(query), top=10))
    assert identify(index, query) is None
    index.remove(2)  # removing twice is harmless
    index.add(2, fpr.fingerprint(sounds[12]))
    found = identify(index, query)
    assert found is not None and found.sample_id == 2
    assert len(index) == 3


def test_adding_again_replaces_the_fingerprint(library) -> None:
    _, sounds = library
    index = fpr.FingerprintIndex()
    index.add(5, fpr.fingerprint(sounds[10]))
    index.add(6, fpr.fingerprint(sounds[11]))
    index.add(5, fpr.fingerprint(sounds[12]))
    assert len(index) == 2
    assert identify(index, sounds[10][SR : 3 * SR]) is None
    found = identify(index, sounds[12][SR : 3 * SR])
    assert found is not None and found.sample_id == 5


def test_matches_are_ranked_and_confidence_is_bounded(library) -> None:
    index, sounds = library
    matches = index.match(fpr.query_fingerprint(with_noise(sounds[14][: 2 * SR], 0.0)), top=3)
    assert 1 <= len(matches) <= 3
    assert [m.evidence for m in matches] == sorted((m.evidence for m in matches), reverse=True)
    assert all(0.0 <= m.confidence <= 1.0 for m in matches)
    assert all(m.confidence == 0.0 for m in matches[1:])  # only the best can beat the runner-up


def test_blob_round_trip_is_exact(library) -> None:
    _, sounds = library
    fp = fpr.fingerprint(sounds[10])
    assert len(fp) > 100
    blob = fpr.to_blob(fp)
    assert len(blob) == 8 + 8 * len(fp)
    back = fpr.from_blob(blob)
    assert back.hashes.dtype == np.uint32 and back.times.dtype == np.uint32
    assert np.array_equal(back.hashes, fp.hashes) and np.array_equal(back.times, fp.times)
    empty = fpr.from_blob(fpr.to_blob(fpr.fingerprint(np.zeros(SR, np.float32))))
    assert len(empty) == 0
    with pytest.raises(ValueError):
        fpr.from_blob(blob[:-1])
    with pytest.raises(ValueError):
        fpr.from_blob(b"nope" + blob[4:])
    assert fpr.is_current(blob) and not fpr.is_current(b"SFP1" + blob[4:])
    with pytest.raises(ValueError, match="version 1"):
        fpr.from_blob(b"SFP1" + blob[4:])  # made with older parameters: its hashes would not line up


def test_fingerprints_are_deterministic_and_bounded() -> None:
    x = sound(7)
    a, b = fpr.fingerprint(x), fpr.fingerprint(x.copy())
    assert np.array_equal(a.hashes, b.hashes) and np.array_equal(a.times, b.times)
    q1, q2 = fpr.query_fingerprint(x), fpr.query_fingerprint(x.copy())
    assert np.array_equal(q1.hashes, q2.hashes) and np.array_equal(q1.times, q2.times)
    assert not np.array_equal(a.hashes, fpr.fingerprint(sound(8)).hashes)
    # the storage bound: at most DENSITY peaks per second, each the anchor of at most FANOUT landmarks
    noise = np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32) * 0.1
    assert len(fpr.fingerprint(noise)) <= 10 * fpr.DENSITY * fpr.FANOUT * 1.05


def test_level_does_not_matter(library) -> None:
    index, sounds = library
    x = sounds[15]
    a, b = fpr.fingerprint(x), fpr.fingerprint(x * 0.25)
    key_a = (a.hashes.astype(np.uint64) << np.uint64(32)) | a.times
    key_b = (b.hashes.astype(np.uint64) << np.uint64(32)) | b.times
    assert len(np.intersect1d(key_a, key_b)) >= 0.9 * max(len(a), len(b))
    found = identify(index, x[2 * SR : 4 * SR] * 0.03)  # -30 dB
    assert found is not None and found.sample_id == 15


def test_other_sample_rates_are_resampled(library) -> None:
    index, sounds = library
    from scipy.signal import resample_poly

    x44 = resample_poly(sounds[16][SR : 3 * SR], 147, 160).astype(np.float32)  # 48 kHz -> 44.1 kHz
    found = fpr.decide(index.match(fpr.query_fingerprint(x44, 44100)))
    assert found is not None and found.sample_id == 16
    assert abs(found.offset - 1.0) <= fpr.FRAME_SECONDS


def test_sample_ids_must_fit_the_index() -> None:
    with pytest.raises(ValueError):
        fpr.FingerprintIndex().add(-1, fpr.fingerprint(sound(1, 1.0)))


def test_a_long_sound_is_fingerprinted_block_by_block_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(int(0.25 * 48_000)) / 48_000
    notes = [np.sin(2 * np.pi * rng.uniform(200, 3000) * t) * np.exp(-4 * t) for _ in range(400)]  # 100 s
    x = (0.3 * np.concatenate(notes) + 0.01 * rng.standard_normal(len(t) * 400)).astype(np.float32)
    whole = fpr._fingerprint(fpr._resample(x, 48_000), fpr.DENSITY, fpr.FANOUT, fpr._WINDOW)
    monkeypatch.setattr(fpr, "BLOCK_FRAMES", 700)  # many blocks, so every seam is crossed
    blocked = fpr.fingerprint(x, 48_000)
    assert len(whole) > 1000
    assert sorted(zip(whole.hashes.tolist(), whole.times.tolist(), strict=True)) == sorted(
        zip(blocked.hashes.tolist(), blocked.times.tolist(), strict=True)
    )


def test_matching_in_threads_while_samples_come_and_go(library) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, sounds = library
    index = fpr.FingerprintIndex()
    index.add(10, fpr.fingerprint(sounds[10]))
    query = fpr.query_fingerprint(sounds[10][SR : 3 * SR])
    churn = {i: fpr.fingerprint(sounds[i]) for i in range(11, 18)}

    def look(_: int) -> int | None:
        found = fpr.decide(index.match(query))
        return found.sample_id if found else None

    with ThreadPoolExecutor(4) as pool:
        answers = pool.map(look, range(64))
        for _round in range(5):  # each add and removal flushes, merges or compacts segments under the readers
            for sample_id, fp in churn.items():
                index.add(sample_id, fp)
            for sample_id in churn:
                index.remove(sample_id)
        found = list(answers)
    assert found == [10] * 64
    assert len(index) == 1 and look(0) == 10


def hit(seed: int) -> np.ndarray:
    """A drum-like hit of 2 s: a 5 ms noise burst and many resonances that ring and decay fast."""
    rng = np.random.default_rng(seed)
    t = np.arange(2 * SR) / SR
    y = np.zeros(2 * SR)
    y[: SR // 200] = rng.standard_normal(SR // 200)
    for f in rng.uniform(60, 3800, 30):
        y += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * np.exp(-t * rng.uniform(25, 60))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def test_a_hit_is_identified_when_noise_buries_its_tail() -> None:
    # Its peaks all sit in the onset frame: only pairs within that frame survive the noise.
    index = fpr.FingerprintIndex()
    hits = {i: hit(i) for i in range(12)}
    for sample_id, x in hits.items():
        index.add(sample_id, fpr.fingerprint(x))
    for sample_id in (3, 7):
        found = identify(index, with_noise(hits[sample_id], 10.0, seed=sample_id))
        assert found is not None and found.sample_id == sample_id
        assert abs(found.offset) <= fpr.FRAME_SECONDS


def test_clicks_and_steps_have_no_peaks() -> None:
    # A flat spectrum has no prominent peak, so clicks and hard edges don't match each other by chance.
    clicks = np.zeros(3 * SR, np.float32)
    clicks[:: SR // 7] = 0.8
    steps = np.repeat(np.resize(np.array([0.5, -0.5], np.float32), 12), SR // 4)
    assert len(fpr.fingerprint(clicks)) == 0 and len(fpr.query_fingerprint(clicks)) == 0
    assert len(fpr.fingerprint(steps)) == 0


def test_verification_counts_the_samples_peaks_the_query_shows_at_its_offset(library) -> None:
    _, sounds = library
    sample = fpr._peak_keys(fpr.fingerprint(sounds[13]))
    start = 80  # frames
    query = fpr._peak_keys(fpr.query_fingerprint(sounds[13][start * fpr.HOP * 6 : (start + 125) * fpr.HOP * 6]))
    frames = sample // fpr._BINS
    under = int(((frames >= start + query[0] // fpr._BINS) & (frames <= start + query[-1] // fpr._BINS)).sum())
    assert under > 30
    extra = fpr._evidence(10, query, sample, start) - 10  # verified peaks beyond chance, weighted
    assert extra >= 0.8 * fpr.VERIFIED_WEIGHT * under  # a clean excerpt shows nearly all of them
    assert fpr._evidence(10, query, sample, start + 20) - 10 <= 0.2 * extra  # elsewhere in the sample: chance
    other = fpr._peak_keys(fpr.fingerprint(sounds[14]))
    assert fpr._evidence(10, query, other, start) - 10 <= 0.2 * extra
    assert fpr._evidence(10, np.zeros(0, np.int64), sample, 0) == fpr._evidence(10, query, None, 0) == 10


def test_confidence_weighs_evidence_against_the_runner_up() -> None:
    # (sample, offset, votes, evidence), best evidence first; named at SCORE over RIVAL_WEIGHT x the runner-up's
    at = fpr.SCORE + fpr.RIVAL_WEIGHT * 20

    def best(votes: int, evidence: float, rival_votes: int = 10, rival: float = 20.0) -> float:
        return fpr._confidence([(1, 0.0, votes, evidence), (2, 0.0, rival_votes, rival), (3, 0.0, 1, 1.0)], 0)

    assert best(20, at) >= fpr.THRESHOLD > best(20, at - 0.5)
    assert best(210, 200.0, 200, 199.0) >= fpr.THRESHOLD  # much evidence for both: the better one is named
    assert best(20, 200.0, 19, 20.0) == 0.0  # but only if the votes agree: a lead of VOTE_LEAD
    assert best(20, 200.0, 20 - fpr.VOTE_LEAD, 20.0) >= fpr.THRESHOLD
    assert fpr._confidence([(1, 0.0, 20, 200.0)], 1) == 0.0  # only the best can be named
    assert 0.0 <= fpr._confidence([(1, 0.0, 10**6, 1e6)], 0) < 1.0


def repitched(x: np.ndarray, factor: float) -> np.ndarray:
    """x played factor times faster, pitch and all (a new sample made from it, like a re-pitched kit)."""
    from scipy.signal import resample_poly

    return resample_poly(x, 1000, int(round(1000 * factor))).astype(np.float32)


def test_a_near_copy_is_told_from_its_source_and_one_not_indexed_is_not_named(library) -> None:
    _, sounds = library
    index = fpr.FingerprintIndex()
    hits = {i: hit(i) for i in range(8)}
    for sample_id, x in hits.items():
        index.add(sample_id, fpr.fingerprint(x))
    index.add(20, fpr.fingerprint(repitched(hits[5], 1.04)))
    index.add(21, fpr.fingerprint(sounds[13]))
    index.add(22, fpr.fingerprint(repitched(sounds[13], 1.04)))
    for seed in (1, 2):
        for truth, x in ((5, hits[5]), (20, repitched(hits[5], 1.04))):
            found = identify(index, with_noise(x, 10.0, seed=seed))
            assert found is not None and found.sample_id == truth
        for truth, x in ((21, sounds[13]), (22, repitched(sounds[13], 1.04))):
            found = identify(index, with_noise(x[SR : 3 * SR], 10.0, seed=seed))
            assert found is not None and found.sample_id == truth
    for factor in (1.02, 0.94):  # re-pitched copies that are not in the library
        assert identify(index, with_noise(repitched(hits[6], factor), 20.0)) is None
        assert identify(index, with_noise(repitched(sounds[14][SR : 3 * SR], factor), 20.0)) is None


def test_spectral_correlation_is_high_only_for_the_same_recording_at_its_offset(library) -> None:
    _, sounds = library
    heard = {i: fpr._resample(x, SR) for i, x in sounds.items()}
    start = 1.5
    query = with_noise(sounds[13][int(start * SR) : int((start + 2) * SR)], 5.0)
    same = fpr.spectral_correlation(query, SR, heard[13], start)
    assert same >= fpr.CORRELATION
    assert fpr.spectral_correlation(query, SR, heard[13], start + fpr.FRAME_SECONDS / 3) >= fpr.CORRELATION  # shifts
    assert fpr.spectral_correlation(query, SR, heard[13], start + 1.0) < 0.5  # elsewhere in the same sound
    assert max(fpr.spectral_correlation(query, SR, heard[i], start) for i in sounds if i != 13) < 0.5
    assert fpr.spectral_correlation(fpr._resample(query, SR), fpr.RATE, heard[13], start) == pytest.approx(same)
    assert fpr.spectral_correlation(query[:100], SR, heard[13], start) == -1.0  # too short to compare
    assert fpr.spectral_correlation(query, SR, heard[13], 60.0) == -1.0  # no overlap


def test_waveform_correlation_is_high_only_for_the_same_recording_at_its_offset(library) -> None:
    _, sounds = library
    heard = {i: fpr._resample(x, SR) for i, x in sounds.items()}
    start, rate, slack = 1.5, fpr.RATE, fpr.WAVE_SLACK
    noisy = with_noise(sounds[13][int(start * SR) : int((start + 2) * SR)], 10.0)
    query, at = fpr._resample(noisy, SR), round(start * rate)
    same = fpr.waveform_correlation(query, heard[13], at, slack)
    assert same >= fpr.WAVE_CORRELATION
    assert fpr.waveform_correlation(query, heard[13], at + fpr.HOP, slack) == pytest.approx(same)  # within the slack
    assert fpr.waveform_correlation(query, heard[13], at + rate, slack) < 0.5  # elsewhere in the same sound
    assert max(fpr.waveform_correlation(query, heard[i], at, slack) for i in sounds if i != 13) < 0.5
    assert fpr.waveform_correlation(query[: fpr.N_FFT], heard[13], at, slack) == -1.0  # too short to compare
    assert fpr.waveform_correlation(query, heard[13], 60 * rate, slack) == -1.0  # no overlap
    early = np.concatenate([np.zeros(rate // 4, np.float32), heard[13][: 2 * rate]])  # begins before the sample
    assert fpr.waveform_correlation(early, heard[13], -(rate // 4), slack) > 0.99
    both = fpr.likeness(noisy, SR, heard[13], start)
    assert both == fpr.Likeness(fpr.spectral_correlation(noisy, SR, heard[13], start), pytest.approx(same))


def test_a_match_the_landmarks_leave_open_is_named_when_its_own_audio_confirms_it() -> None:
    like = fpr.Likeness
    open_ = [fpr.Match(1, 0.5, 6, 30.0, 0.3), fpr.Match(2, 1.0, 4, 20.0, 0.0), fpr.Match(3, 0.0, 2, 5.0, 0.0)]
    assert fpr.decide(open_) is None and [m.sample_id for m in fpr.to_verify(open_)] == [1, 2]
    found = fpr.decide(open_, {1: like(0.9, 0.0), 2: like(0.1, 0.0)})
    assert found is not None and found.sample_id == 1 and found.offset == 0.5
    assert fpr.THRESHOLD < found.confidence < 1.0
    assert fpr.decide(open_, {1: like(1.0, 0.0)})  # the runner-up could not be read: the best alone decides
    assert fpr.decide(open_, {1: like(fpr.CORRELATION - 0.01, 0.0), 2: like(0.1, 0.0)}) is None
    assert fpr.decide(open_, {1: like(0.9, 0.0), 2: like(0.95, 0.0)}) is None  # two takes: the runner-up is closer
    assert fpr.decide(open_, {2: like(0.99, 0.99)}) is None  # only the best match can be named
    # by its waveform: when it correlates WAVE_CORRELATION and leads the runner-up's by WAVE_LEAD
    by_wave = fpr.decide(open_, {1: like(0.2, 0.9), 2: like(0.1, 0.5)})
    assert by_wave is not None and by_wave.sample_id == 1 and fpr.THRESHOLD < by_wave.confidence < 1.0
    assert fpr.decide(open_, {1: like(0.2, 0.9), 2: like(0.1, 0.9 - fpr.WAVE_LEAD / 2)}) is None  # two copies
    assert fpr.decide(open_, {1: like(0.2, fpr.WAVE_CORRELATION - 0.01), 2: like(0.1, 0.0)}) is None
    surer = fpr.decide(open_, {1: like(0.9, 0.99), 2: like(0.1, 0.5)})
    assert surer is not None and surer.confidence > found.confidence  # the surer of the two checks counts
    chance = [fpr.Match(1, 0.5, fpr.VERIFY_VOTES - 1, 12.0, 0.1)]
    assert fpr.to_verify(chance) == [] and fpr.decide(chance, {1: like(1.0, 1.0)}) is None  # too few votes
    settled = [fpr.Match(1, 0.5, 40, 120.0, 0.8), fpr.Match(2, 1.0, 4, 20.0, 0.0)]
    assert fpr.to_verify(settled) == [] and fpr.decide(settled, {1: like(0.0, 0.0)}) == settled[0]
