"""A small BiT that has really learned something: the tiny variant trained on scikit-learn's digits.

Random weights give near-tied logits, so their top-1 numbers say nothing about FP16 or INT8 accuracy.
This trains the same architecture (all the traps included) on a real dataset that ships inside a PyPI
package, in well under a minute on two cores, so precision drops become real accuracy numbers.
"""

from __future__ import annotations

import numpy as np

RESOLUTION = 32
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_rgb(resolution: int = RESOLUTION, seed: int = 0):
    """(train_u8, train_labels, test_u8, test_labels): 8x8 digits upscaled to RGB uint8, a fixed 75/25 split."""
    import cv2
    from sklearn.datasets import load_digits

    data = load_digits()
    imgs = (data.images / 16.0 * 255).astype(np.uint8)
    big = np.stack([cv2.resize(im, (resolution, resolution), interpolation=cv2.INTER_LINEAR) for im in imgs])
    rgb = np.repeat(big[..., None], 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(rgb))
    cut = int(0.75 * len(rgb))
    tr, te = order[:cut], order[cut:]
    return rgb[tr], data.target[tr], rgb[te], data.target[te]


def train(steps: int = 400, batch: int = 64, seed: int = 0, lr: float = 3e-3):
    """Weights (official checkpoint layout, 10 classes) and the test-set accuracy TF reaches with them."""
    from bit_trt.export.tensorflow_import import import_tensorflow

    tf = import_tensorflow()
    from bit_trt.export.bit_tf import forward
    from bit_trt.export.synthetic import synthetic_weights
    from bit_trt.export.variants import get_variant

    tf.random.set_seed(seed)
    v = get_variant("tiny")
    init = synthetic_weights(v, 10, seed)
    init["resnet/head/conv2d/kernel"] *= 0.0  # BiT's fine-tuning recipe: zero-initialized head
    weights = {k: tf.Variable(a) for k, a in init.items()}
    x_tr, y_tr, x_te, y_te = digits_rgb(seed=seed)
    opt = tf.keras.optimizers.Adam(lr)
    variables = list(weights.values())

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = forward(weights, x, v)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x_tr), batch)
        step(tf.constant(x_tr[idx], tf.float32) / 255.0, tf.constant(y_tr[idx]))
    trained = {k: w.numpy() for k, w in weights.items()}
    logits = forward(weights, tf.constant(x_te, tf.float32) / 255.0, v).numpy()
    return trained, float((logits.argmax(1) == y_te).mean())
