"""An independent NumPy BiT forward pass, written from the paper and big_transfer's description, not from
bit_tf.py. Tests compare the TF model and the exported ONNX against it, so an architecture trap that both
of our implementations share (they share `bit_tf.forward`) is still caught."""

import numpy as np

from bit_trt.export.variants import Variant


def conv(x, kernel_hwio, stride=1, pad=0):
    """NHWC conv, VALID after explicit zero padding; float64."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, cin, cout = kernel_hwio.shape
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            out += patch @ kernel_hwio[i, j]
    return out


def standardize(k):
    k = k.astype(np.float64)
    mean = k.mean(axis=(0, 1, 2), keepdims=True)
    var = k.var(axis=(0, 1, 2), keepdims=True)  # biased
    return (k - mean) / np.sqrt(var + 1e-10)


def group_norm(x, gamma, beta, groups=32, eps=1e-5):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(n, h, w, c) * gamma + beta


def max_pool_3x3_s2_zero_pad(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros: the stem output is not ReLU'd
    n, h, w, c = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i : i + 2 * oh : 2, j : j + 2 * ow : 2, :])
    return out


def forward(weights, images01, variant: Variant):
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    x = images01.astype(np.float64) * 2 - 1
    x = conv(x, standardize(w["resnet/root_block/standardized_conv2d/kernel"]), stride=2, pad=3)
    x = max_pool_3x3_s2_zero_pad(x)
    for b, units in enumerate(variant.units, start=1):
        for u in range(1, units + 1):
            p = f"resnet/block{b}/unit{u:02d}"
            stride = 2 if (u == 1 and b > 1) else 1
            pre = relu(group_norm(x, w[f"{p}/a/group_norm/gamma"], w[f"{p}/a/group_norm/beta"]))
            short = conv(pre, standardize(w[f"{p}/a/proj/standardized_conv2d/kernel"]), stride) if u == 1 else x
            y = conv(pre, standardize(w[f"{p}/a/standardized_conv2d/kernel"]))
            y = relu(group_norm(y, w[f"{p}/b/group_norm/gamma"], w[f"{p}/b/group_norm/beta"]))
            y = conv(y, standardize(w[f"{p}/b/standardized_conv2d/kernel"]), stride, pad=1)
            y = relu(group_norm(y, w[f"{p}/c/group_norm/gamma"], w[f"{p}/c/group_norm/beta"]))
            x = conv(y, standardize(w[f"{p}/c/standardized_conv2d/kernel"])) + short
    x = relu(group_norm(x, w["resnet/group_norm/gamma"], w["resnet/group_norm/beta"]))
    x = x.mean(axis=(1, 2))
    return x @ w["resnet/head/conv2d/kernel"][0, 0] + w["resnet/head/conv2d/bias"]
