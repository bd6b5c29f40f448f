"""K copies of the report's CNN as one Keras model: every variable has a leading trial axis.

Slice k of the pack is exactly the network of model/cnn.py (423,244 parameters for
Model 1, 441,164 with 8,960 non-trainable for Model 2) with its own learning rate,
L2 factor, initial weights and dropout masks; nothing couples two slices:

- conv1 sees the same input in every slice, so it is one convolution with K x 32
  filters (channel k*32 + c is slice k's filter c); after it the pack is a list of K
  per-slice maps, and conv2 and conv3 are per slice, either one convolution per slice
  (`conv="loop"`, the default except under JAX on a GPU, see `default_conv`) or one
  grouped convolution on the maps side by side (`conv="grouped"`, what vmap of a
  convolution becomes);
- the dense layers are batched products (einsum over the trial axis);
- BatchNormalization (Model 2) is per channel, so its statistics are per slice;
- the loss is the sum over slices of each slice's mean cross-entropy plus
  reg_k * ||W_k||^2, so each slice's gradient is its own model's gradient;
- SliceAdam is Keras's Adam with a learning rate per slice (a (K,) optimizer
  variable broadcast over the trial axis): Adam is invariant to scaling a
  gradient, so a per-slice lr has to enter the update itself. No global clipping,
  no loss scaling.

Written with keras.ops / keras.random only: it runs under TensorFlow (the default)
and JAX (KERAS_BACKEND=jax). `extract(pack, k)` gives slice k as the plain
model/cnn.py network, whose predictions equal the slice's.
"""
from __future__ import annotations

import math

import numpy as np
import keras
from keras import ops

from model.cnn import (CONV_FILTERS, DENSE_UNITS, INPUT_SHAPE, N_CLASSES, ModelConfig, architecture,
                       compile_model)

BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99  # keras.layers.BatchNormalization's defaults
FLAT = 7 * 7 * CONV_FILTERS[-1]       # 4214


def slice_shapes(variant: int) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, per-slice shape, trainable) in the order of the plain model's weights."""
    bn = variant == 2
    out: list[tuple[str, tuple[int, ...], bool]] = []

    def norm(name, n):
        if bn:
            out.extend([(f"{name}_gamma", (n,), True), (f"{name}_beta", (n,), True),
                        (f"{name}_mean", (n,), False), (f"{name}_var", (n,), False)])

    cin = INPUT_SHAPE[-1]
    for i, cout in enumerate(CONV_FILTERS, 1):
        out += [(f"conv{i}_kernel", (3, 3, cin, cout), True), (f"conv{i}_bias", (cout,), True)]
        norm(f"bn{i}", cout)
        cin = cout
    norm("bn_flat", FLAT)
    out += [("dense_kernel", (FLAT, DENSE_UNITS), True), ("dense_bias", (DENSE_UNITS,), True)]
    norm("bn_dense", DENSE_UNITS)
    out += [("output_kernel", (DENSE_UNITS, N_CLASSES), True), ("output_bias", (N_CLASSES,), True)]
    return out


def initial_slice(variant: int, seed: int) -> list[np.ndarray]:
    """One slice's initial weights from its trial's seed alone (so the same in a pack of any
    size and under either backend): Glorot-uniform kernels from NumPy's PCG64 seeded with
    (seed, layer), zero biases and betas, unit gammas and moving variances."""
    weights = []
    for j, (name, shape, _) in enumerate(slice_shapes(variant)):
        if name.endswith("_kernel"):
            receptive = math.prod(shape[:-2])
            limit = math.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
            rng = np.random.default_rng([seed % 2 ** 63, j])
            weights.append(rng.uniform(-limit, limit, shape).astype(np.float32))
        elif name.endswith(("_gamma", "_var")):
            weights.append(np.ones(shape, np.float32))
        else:
            weights.append(np.zeros(shape, np.float32))
    return weights


def dropout_seed(seed: int) -> int:
    """The dropout stream's seed of a trial (the seed-state dtype is int32-safe everywhere)."""
    return seed % 2 ** 31


class SliceMean(keras.metrics.Metric):
    """Per-slice running mean of a (batch, K) quantity; result() is a (K,) tensor."""

    def __init__(self, k: int, name: str):
        super().__init__(name=name)
        self.total = self.add_variable(shape=(k,), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, values):
        values = ops.cast(values, "float32")
        self.total.assign_add(ops.sum(values, axis=0))
        self.count.assign_add(ops.cast(ops.shape(values)[0], "float32"))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)


def slice_ce_acc(y, probs):
    """(cross-entropy, correct) per sample and slice, (batch, K) each, from labels (batch,)
    and probabilities (batch, K, 2): Keras's sparse_categorical_crossentropy per slice."""
    k = ops.shape(probs)[1]
    target = ops.repeat(ops.expand_dims(ops.cast(y, "int32"), 1), k, axis=1)
    ce = ops.sparse_categorical_crossentropy(target, probs)
    correct = ops.cast(ops.equal(ops.cast(ops.argmax(probs, axis=-1), "int32"), target), "float32")
    return ce, correct


def default_conv() -> str:
    """"grouped" under JAX on a GPU (cuDNN runs the groups natively), else "loop".

    On CPU both backends lower a grouped convolution to something slower or coupled:
    TensorFlow runs it through XLA (8-10x slower than K convolutions at K = 4, measured),
    and XLA's CPU backend expands it into a dense convolution with a block-diagonal
    kernel, so one slice's NaN reaches the others through the zero blocks (0 x NaN),
    which tests/model/test_packed.py caught under JAX."""
    if keras.backend.backend() == "jax":
        import jax

        if jax.devices()[0].platform in ("gpu", "cuda", "rocm"):
            return "grouped"
    return "loop"


class PackedCNN(keras.Model):
    """K slices of Model `variant`; takes normalized (batch, 60, 60, 3), returns (batch, K, 2)."""

    def __init__(self, k: int, variant: int = 1, dropout: float = 0.25, conv: str = "auto",
                 **kwargs):
        super().__init__(name=f"packed{variant}x{k}", **kwargs)
        if conv == "auto":
            conv = default_conv()
        if conv not in ("loop", "grouped"):
            raise ValueError(f"conv must be auto, loop or grouped, got {conv!r}")
        self.k, self.variant, self.rate, self.conv_mode = k, variant, dropout, conv
        self.names = [name for name, _, _ in slice_shapes(variant)]
        for name, shape, trainable in slice_shapes(variant):
            setattr(self, name, self.add_weight(shape=(k, *shape), initializer="zeros",
                                                trainable=trainable, name=name))
        self.reg = self.add_weight(shape=(k,), initializer="zeros", trainable=False, name="reg")
        self.seed_gens = [keras.random.SeedGenerator(0, name=f"dropout_seed_{i}") for i in range(k)]
        self.train_ce = SliceMean(k, "slice_ce")
        self.train_acc = SliceMean(k, "slice_acc")
        self.built = True

    # -- the parameters ----------------------------------------------------------------
    def slice_variables(self) -> list:
        return [getattr(self, n) for n in self.names]

    def per_slice_count(self) -> tuple[int, int]:
        """(parameters, non-trainable parameters) of one slice."""
        shapes = slice_shapes(self.variant)
        return (sum(math.prod(s) for _, s, _ in shapes),
                sum(math.prod(s) for _, s, t in shapes if not t))

    def penalty(self):
        """(K,) sum of squared kernel entries of each slice (the L2 term without its factor)."""
        return sum(ops.sum(ops.reshape(ops.square(v), (self.k, -1)), axis=1)
                   for n, v in zip(self.names, self.slice_variables()) if n.endswith("_kernel"))

    def load(self, weights: list[list[np.ndarray]], regs, seeds) -> None:
        """Every slice at once: weights[k] in slice_shapes order, L2 factors and dropout
        seeds (one per slice); one assignment per variable."""
        for j, var in enumerate(self.slice_variables()):
            var.assign(np.stack([w[j] for w in weights]))
        self.reg.assign(np.asarray(regs, np.float32))
        for gen, seed in zip(self.seed_gens, seeds, strict=True):
            gen.state.assign(np.array([dropout_seed(seed), 0], dtype=gen.state.dtype))

    def zero_slice(self, k: int) -> None:
        """Slice k's weights and L2 factor set to 0 (see stop_slice)."""
        for var in [*self.slice_variables(), self.reg]:
            var.assign(_zeroed(var, k))

    def get_slice(self, k: int) -> list[np.ndarray]:
        return [np.asarray(ops.convert_to_numpy(v))[k] for v in self.slice_variables()]

    # -- the forward pass --------------------------------------------------------------
    # Between conv1 and the dense layers the pack is a list of K per-slice maps, each
    # (batch, H, W, C): every slice's conv, bias, relu, pooling and dropout are the plain
    # model's ops on its own contiguous tensor, so in "loop" mode nothing is sliced or
    # concatenated there, and the slices' chains are independent ops that TensorFlow runs
    # side by side. (Channel slices of one tensor were a copy each, forward and back: in
    # bench_pack on the 2-core CPU K = 2 and 16 ran at 0.68x and 0.48x of K = 1's
    # trials/hour, with the list at 1.09x and 0.99x; BENCHMARKS.md section 8.)
    def call(self, x, training=False):
        bn, hs, cin = self.variant == 2, x, INPUT_SHAPE[-1]
        for i, cout in enumerate(CONV_FILTERS, 1):
            hs = self._block(i, hs, cin, cout)
            if bn:
                hs = self._bn(hs, f"bn{i}", (0, 1, 2), training)
            hs = self._dropout(hs, training)
            cin = cout
        hs = [ops.reshape(h, (-1, FLAT)) for h in hs]  # NHWC order, as Keras's Flatten
        if bn:
            hs = self._bn(hs, "bn_flat", (0,), training)
        h = ops.stack(hs, axis=1) if self.k > 1 else ops.expand_dims(hs[0], 1)  # (batch, K, FLAT)
        h = ops.relu(ops.einsum("bki,kio->bko", h, self.dense_kernel) + self.dense_bias)
        if bn:
            h = ops.stack(self._bn(self._unstack(h, axis=1), "bn_dense", (0,), training), axis=1)
        logits = ops.einsum("bki,kio->bko", h, self.output_kernel) + self.output_bias
        return ops.softmax(ops.cast(logits, "float32"), axis=-1)

    def _block(self, i, hs, cin, cout):
        """Conv i, bias, relu and 2x2 max-pooling; the K slices' pooled maps.

        conv1 (`hs` is the shared input) is one convolution with K*cout filters (channel
        k*cout + c is slice k's filter c), split into the slices after pooling; in
        "grouped" mode conv2 and conv3 are one grouped convolution on the slices' maps
        side by side; in "loop" mode each slice convolves its own map."""
        kernel, bias = getattr(self, f"conv{i}_kernel"), getattr(self, f"conv{i}_bias")
        # ops.add, not +: Keras's TensorFlow backend makes it a BiasAdd, whose gradient
        # oneDNN fuses into the filter gradient (as for the Conv2D layer of model/cnn.py)
        if i > 1 and self.conv_mode == "loop":
            return [ops.max_pool(ops.relu(ops.add(ops.conv(h, w, padding="same"), b)), 2, 2)
                    for h, w, b in zip(hs, self._unstack(kernel), self._unstack(bias))]
        h = hs if i == 1 else (hs[0] if self.k == 1 else ops.concatenate(hs, axis=-1))
        w = ops.reshape(ops.transpose(kernel, (1, 2, 3, 0, 4)), (3, 3, cin, self.k * cout))
        h = ops.add(ops.conv(h, w, padding="same"), ops.reshape(bias, (self.k * cout,)))
        h = ops.max_pool(ops.relu(h), 2, 2)
        return [h] if self.k == 1 else ops.split(h, self.k, axis=-1)

    def _unstack(self, v, axis=0):
        v = ops.convert_to_tensor(v)  # a variable's value (JAX's unstack takes no Variable)
        return [ops.squeeze(v, axis)] if self.k == 1 else ops.unstack(v, self.k, axis=axis)

    def _bn(self, hs, name, axes, training):
        """BatchNormalization of each slice's tensor over `axes`, with that slice's row of
        gamma, beta and the moving statistics ((K, C) variables, updated in one assignment)."""
        gamma, beta = getattr(self, f"{name}_gamma"), getattr(self, f"{name}_beta")
        mean_v, var_v = getattr(self, f"{name}_mean"), getattr(self, f"{name}_var")
        hs = [ops.cast(h, "float32") for h in hs]
        if training:
            moments = [ops.moments(h, axes=axes) for h in hs]
            mean, var = ops.stack([m for m, _ in moments]), ops.stack([v for _, v in moments])
            mean_v.assign(mean_v * BN_MOMENTUM + mean * (1.0 - BN_MOMENTUM))
            var_v.assign(var_v * BN_MOMENTUM + var * (1.0 - BN_MOMENTUM))
        else:
            mean, var = mean_v, var_v
        # tf.nn.batch_normalization's arithmetic (what Keras's layer runs under TensorFlow)
        inv = ops.rsqrt(var + BN_EPSILON) * gamma
        shift = beta - mean * inv
        return [ops.cast(h * a + b, self.compute_dtype)
                for h, a, b in zip(hs, self._unstack(inv), self._unstack(shift))]

    def _dropout(self, hs, training):
        if not training or self.rate == 0:
            return hs
        return [keras.random.dropout(h, self.rate, seed=g) for h, g in zip(hs, self.seed_gens)]

    # -- loss and metrics (used by Keras's own train step under either backend) --------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        ce, _ = slice_ce_acc(y, y_pred)
        return ops.sum(ops.mean(ce, axis=0)) + ops.sum(self.reg * self.penalty())

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        ce, correct = slice_ce_acc(y, y_pred)
        self.train_ce.update_state(ce)
        self.train_acc.update_state(correct)
        return self.get_metrics_result()


class SliceAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam with `slice_lr`, a (K,) variable, as the learning rate of each
    slice (broadcast over every variable's leading trial axis). Same arithmetic as Keras's
    Adam.update_step; a slice with lr 0 and finite moments does not move."""

    def __init__(self, k: int, **kwargs):
        super().__init__(learning_rate=1.0, **kwargs)
        self.k = k

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.slice_lr = self.add_variable(shape=(self.k,), initializer="zeros", name="slice_lr")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.reshape(ops.cast(self.slice_lr, dtype), (self.k,) + (1,) * (len(variable.shape) - 1))
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha),
                                             ops.add(ops.sqrt(v), self.epsilon)))


def compile_pack(pack: PackedCNN, steps_per_execution: int = 1) -> None:
    pack.compile(optimizer=SliceAdam(pack.k), steps_per_execution=steps_per_execution)
    pack.optimizer.build(pack.trainable_variables)


def reset_optimizer(pack: PackedCNN, lrs) -> None:
    """Adam's moments and step count zeroed, `lrs` (K,) as the slices' learning rates."""
    for v in pack.optimizer.variables:
        v.assign(ops.zeros(v.shape, v.dtype))
    pack.optimizer.slice_lr.assign(np.asarray(lrs, np.float32))


def stop_slice(pack: PackedCNN, k: int) -> None:
    """Freeze slice k for the rest of the run: lr 0, zero weights and moments (finite, so the
    slice computes harmless zeros and never moves), L2 factor 0. Other slices are untouched."""
    pack.zero_slice(k)
    opt = pack.optimizer
    for var in [*opt._momentums, *opt._velocities, opt.slice_lr]:
        var.assign(_zeroed(var, k))


def _zeroed(var, k: int) -> np.ndarray:
    value = np.array(ops.convert_to_numpy(var))
    value[k] = 0
    return value


def extract(pack: PackedCNN, k: int, cfg: ModelConfig) -> keras.Model:
    """Slice k as the plain report network (model/cnn.py layers, L2(cfg.reg) on its kernels,
    compiled as build_model compiles it) with the slice's weights; it takes normalized input
    like the pack (model/saving.py adds the normalization in front when it is saved)."""
    plain = architecture(cfg)
    plain.set_weights(pack.get_slice(k))
    compile_model(plain, cfg.lr)
    return plain
