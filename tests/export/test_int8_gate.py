"""The INT8 accuracy gate on logits whose answers are known."""

import numpy as np

from bit_trt.export import int8


def _confident(n=100, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), rng.integers(0, classes, n)] += 8  # one clear winner per sample
    return logits


def test_small_noise_passes():
    tf = _confident()
    noisy = tf + np.random.default_rng(1).normal(0, 0.1, tf.shape)
    verdict = int8.gate(noisy, tf, tf, max_top1_drop=0.01)
    assert verdict["passed"] and verdict["confident_samples"] == 100 and verdict["top1_drop"] == 0


def test_flipped_confident_answers_fail():
    tf = _confident()
    bad = tf.copy()
    bad[:5] = np.roll(bad[:5], 1, axis=1)  # 5% of confident answers change
    verdict = int8.gate(bad, tf, tf, max_top1_drop=0.01)
    assert not verdict["passed"] and "dropped by 0.050" in verdict["failures"][0]
    # A looser top-1 tolerance admits the drop; the cosine floor still sees the 5 wrecked samples.
    looser = int8.gate(bad, tf, tf, max_top1_drop=0.06)
    assert len(looser["failures"]) == 1 and looser["failures"][0].startswith("min cosine")


def test_near_ties_do_not_count_but_garbage_still_fails():
    rng = np.random.default_rng(2)
    tf = rng.normal(0, 0.1, (50, 10))  # untrained: no sample is confident
    flipped = tf + rng.normal(0, 0.01, tf.shape)
    ok = int8.gate(flipped, tf, tf, max_top1_drop=0.0)
    assert ok["confident_samples"] == 0 and ok["passed"]
    garbage = rng.normal(0, 0.1, tf.shape)
    bad = int8.gate(garbage, tf, tf, max_top1_drop=0.0)
    assert not bad["passed"] and bad["failures"][0].startswith("min cosine")


def test_nan_fails():
    tf = _confident()
    nan = tf.copy()
    nan[0, 0] = np.nan
    assert "non-finite logits" in int8.gate(nan, tf, tf, 0.01)["failures"]
