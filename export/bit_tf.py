"""BiT ResNet-v2 in TensorFlow: one forward function over a weights mapping, in either layout.

The same function serves two purposes:
- the TF reference (`BiTModule`, NHWC, weights as variables; savable as a TF Hub-style SavedModel), and
- the graph handed to tf2onnx (NCHW, weights as function inputs), see `tf2onnx_route.py`.
Writing it once means the converted graph and the reference can only differ where conversion differs.

The traps (docs/model.md, "Root block", "Weight standardization", "GroupNorm", "Architecture"): zero-padded
stem max-pool (the stem has no ReLU, so 0 is not -inf), weight standardization with biased variance and
eps 1e-10, GroupNorm 32 groups eps 1e-5, stride on the 3x3 conv and on the projection, projection only in
unit01. Inputs are [0,1] and mapped to the checkpoint's [-1,1] inside, like the TF Hub module ("Input contract").
"""

from __future__ import annotations

from .checkpoint import unit_prefix
from .tensorflow_import import import_tensorflow
from .variants import GN_EPS, GN_GROUPS, WS_EPS, Variant

tf = import_tensorflow()

# Name scopes the cleanup pass keys on: every node tf2onnx emits for one GroupNorm keeps this scope.
GN_SCOPE = "group_norm"


class _Net:
    def __init__(self, weights, layout: str):
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be NHWC or NCHW, not {layout!r}")
        self.w = weights
        self.layout = layout
        self.channel_axis = 1 if layout == "NCHW" else 3

    def _spatial(self, top_left: int, bottom_right: int):
        pads = [[0, 0], [top_left, bottom_right], [top_left, bottom_right]]
        return [[0, 0], [0, 0]] + pads[1:] if self.layout == "NCHW" else pads + [[0, 0]]

    def conv(self, x, key: str, stride: int = 1, pad: int = 0):
        kernel = self.w[key]
        with tf.name_scope("standardize"):
            mean, var = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
            kernel = (kernel - mean) / tf.sqrt(var + WS_EPS)
        if pad:
            x = tf.pad(x, self._spatial(pad, pad))
        strides = [1, 1, stride, stride] if self.layout == "NCHW" else [1, stride, stride, 1]
        return tf.nn.conv2d(x, kernel, strides=strides, padding="VALID", data_format=self.layout)

    def group_norm(self, x, prefix: str):
        with tf.name_scope(GN_SCOPE):
            gamma, beta = self.w[f"{prefix}/gamma"], self.w[f"{prefix}/beta"]
            channels = gamma.shape[0]
            if self.layout == "NCHW":
                # [N, G, C/G*H*W]: normalizing the last axis is exactly InstanceNormalization over groups.
                grouped = tf.reshape(x, tf.stack([tf.shape(x)[0], GN_GROUPS, -1]))
                mean, var = tf.nn.moments(grouped, axes=[2], keepdims=True)
                y = tf.reshape((grouped - mean) * tf.math.rsqrt(var + GN_EPS), tf.shape(x))
                return y * tf.reshape(gamma, [channels, 1, 1]) + tf.reshape(beta, [channels, 1, 1])
            shape = tf.shape(x)
            grouped = tf.reshape(x, tf.stack([shape[0], shape[1], shape[2], GN_GROUPS, channels // GN_GROUPS]))
            mean, var = tf.nn.moments(grouped, axes=[1, 2, 4], keepdims=True)
            y = tf.reshape((grouped - mean) * tf.math.rsqrt(var + GN_EPS), shape)
            return y * gamma + beta

    def gn_relu(self, x, prefix: str):
        return tf.nn.relu(self.group_norm(x, prefix))

    def unit(self, x, block: int, unit: int, stride: int):
        p = unit_prefix(block, unit)
        preact = self.gn_relu(x, f"{p}/a/group_norm")
        shortcut = x
        if unit == 1:
            shortcut = self.conv(preact, f"{p}/a/proj/standardized_conv2d/kernel", stride)
        y = self.conv(preact, f"{p}/a/standardized_conv2d/kernel")
        y = self.conv(self.gn_relu(y, f"{p}/b/group_norm"), f"{p}/b/standardized_conv2d/kernel", stride, pad=1)
        y = self.conv(self.gn_relu(y, f"{p}/c/group_norm"), f"{p}/c/standardized_conv2d/kernel")
        return y + shortcut

    def __call__(self, images, variant: Variant):
        x = images * 2.0 - 1.0
        if self.layout == "NCHW":
            x = tf.transpose(x, [0, 3, 1, 2])  # the one layout change in the network
        with tf.name_scope("root_block"):
            x = self.conv(x, "resnet/root_block/standardized_conv2d/kernel", stride=2, pad=3)
            # Zero padding, not -inf: an ONNX MaxPool pad would differ wherever the stem output is negative.
            x = tf.pad(x, self._spatial(1, 1))
            window = [1, 1, 3, 3] if self.layout == "NCHW" else [1, 3, 3, 1]
            strides = [1, 1, 2, 2] if self.layout == "NCHW" else [1, 2, 2, 1]
            x = tf.nn.max_pool2d(x, window, strides, "VALID", data_format=self.layout)
        for block, units in enumerate(variant.units, start=1):
            for unit in range(1, units + 1):
                with tf.name_scope(f"block{block}_unit{unit:02d}"):
                    x = self.unit(x, block, unit, stride=2 if (unit == 1 and block > 1) else 1)
        with tf.name_scope("head"):
            x = self.gn_relu(x, "resnet/group_norm")
            spatial_axes = [2, 3] if self.layout == "NCHW" else [1, 2]
            x = tf.reduce_mean(x, axis=spatial_axes)
            kernel = self.w["resnet/head/conv2d/kernel"]
            logits = tf.matmul(x, tf.reshape(kernel, [kernel.shape[2], kernel.shape[3]]))
            return tf.nn.bias_add(logits, self.w["resnet/head/conv2d/bias"])


def forward(weights, images, variant: Variant, layout: str = "NHWC"):
    """Logits [N, classes] for float32 NHWC images in [0,1]; `weights` maps checkpoint keys to tensors."""
    return _Net(weights, layout)(images, variant)


class BiTModule(tf.Module):
    """The TF reference model, with the TF Hub module's contract: NHWC float32 [0,1], any H,W -> logits."""

    def __init__(self, weights, variant: Variant, name: str = "bit", consume: bool = False):
        """consume: take the arrays out of `weights` (a dict) one by one as each becomes a variable, so that the
        numpy copy and TF's never coexist whole (the reference child: R50x3's weights are 870 MB)."""
        super().__init__(name=name)
        self._variant = variant
        # Variables are named by their checkpoint keys, as in the TF Hub modules, so a SavedModel written
        # from this module is read back by the same code that reads TF Hub's.
        if consume:
            self.weights = {}
            for k in list(weights):
                self.weights[k] = tf.Variable(weights.pop(k), trainable=False, name=k)
        else:
            self.weights = {k: tf.Variable(v, trainable=False, name=k) for k, v in weights.items()}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def __call__(self, images):
        return forward(self.weights, images, self._variant, "NHWC")
