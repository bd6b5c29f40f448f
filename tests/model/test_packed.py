"""model/packed.py and model/train.py's train_pack: a pack of K trials is K separate models.

Backend-neutral: this file runs under TensorFlow here and under JAX in a process of its
own (tests/model/test_packed_jax.py sets KERAS_BACKEND=jax before Keras is imported).
"""
from __future__ import annotations

import numpy as np
import pytest
import keras

from dataset.pipeline import normalized
from model.cnn import ModelConfig
from model.packed import PackedCNN, compile_pack, extract, initial_slice, slice_shapes
from model.saving import inference_model
from model.train import TrainConfig, epoch_order, train, train_model, train_pack

BACKEND = keras.backend.backend()
ONE = TrainConfig(epochs=1, batch_size=8, data_seed=3)
CONFIGS = [ModelConfig(lr=2e-3, reg=0.0), ModelConfig(lr=5e-4, reg=1e-3), ModelConfig(lr=1e-2, reg=3e-2)]
SEEDS = [11, 22, 33]
GRAD_SEEDS = [30, 109, 120]  # see test_logits_and_gradients_equal_separate_models


def grads(loss_fn, variables) -> list[np.ndarray]:
    """d loss_fn() / d variables, with the backend's own autodiff."""
    if BACKEND == "jax":
        import jax

        def f(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()
        return [np.asarray(g) for g in jax.grad(f)([v.value for v in variables])]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn()
    return [g.numpy() for g in tape.gradient(loss, variables)]


def pool_gap(plain, x) -> float:
    """The smallest relative gap between the two largest values of any max-pool window
    (with a positive max) in `plain`'s forward pass on x: max-pooling's gradient jumps
    at a tie, so where two values are within an ulp the gradient may go to either."""
    inputs = keras.Model(plain.inputs, [layer.input for layer in plain.layers
                                        if isinstance(layer, keras.layers.MaxPooling2D)])
    gap = np.inf
    for h in inputs(x, training=True):
        h = keras.ops.convert_to_numpy(h)
        b, rows, cols, c = h.shape
        windows = (h[:, :rows // 2 * 2, :cols // 2 * 2].reshape(b, rows // 2, 2, cols // 2, 2, c)
                   .transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4))
        top = np.sort(windows, axis=1)[:, 2:]
        top = top[top[:, 1] > 0]
        gap = min(gap, float(((top[:, 1] - top[:, 0]) / top[:, 1]).min()))
    return gap


def history(result):
    return [(m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy) for m in result.history]


@pytest.mark.parametrize("variant, total, frozen", [(1, 423_244, 0), (2, 441_164, 8_960)])
def test_each_slice_is_the_report_network(variant, total, frozen):
    pack = PackedCNN(3, variant)
    assert pack.per_slice_count() == (total, frozen)
    assert sum(int(np.prod(v.shape)) for v in pack.slice_variables()) == 3 * total
    plain = extract(pack, 1, ModelConfig(variant=variant))
    assert plain.count_params() == total
    assert sum(int(np.prod(w.shape)) for w in plain.non_trainable_weights) == frozen


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("conv", ["loop", "grouped"])
def test_logits_and_gradients_equal_separate_models(tiny_crops, variant, conv):
    """Dropout off: each slice's outputs and one-step gradients are its own model's.

    GRAD_SEEDS are weight seeds whose forward pass on these 8 crops has no max-pool window
    within 1e-5 (relative) of a tie, asserted below: at a near-tie an ulp of difference
    between the pack's sums and the plain model's sends that window's gradient to another
    pixel (both are valid gradients; under JAX on one Xeon, seeds 11, 22, 33 on 8 crops
    had such a window, 5e-7 apart, and its gradient differed by 3e-4)."""
    x, y = (a[:8] for a in normalized(tiny_crops, "train"))
    cfgs = [ModelConfig(variant=variant, lr=c.lr, reg=c.reg, dropout=0.0) for c in CONFIGS]
    pack = PackedCNN(3, variant, dropout=0.0, conv=conv)
    pack.load([initial_slice(variant, s) for s in GRAD_SEEDS], [c.reg for c in cfgs], GRAD_SEEDS)
    trainable = [v for v, (_, _, t) in zip(pack.slice_variables(), slice_shapes(variant)) if t]
    packed_probs = keras.ops.convert_to_numpy(pack(x, training=True))
    packed_grads = grads(lambda: pack.compute_loss(y=y, y_pred=pack(x, training=True)), trainable)
    for k, cfg in enumerate(cfgs):
        plain = extract(pack, k, cfg)
        assert pool_gap(plain, x) >= 1e-5, "choose other GRAD_SEEDS: a max-pool window is near a tie"

        def plain_loss():
            ce = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, plain(x, training=True)))
            return ce + cfg.reg * sum(keras.ops.sum(keras.ops.square(w)) for w in plain.trainable_weights
                                      if "kernel" in w.path)
        np.testing.assert_allclose(packed_probs[:, k], keras.ops.convert_to_numpy(plain(x, training=True)),
                                   atol=1e-5)
        for got, want in zip(packed_grads, grads(plain_loss, plain.trainable_weights), strict=True):
            np.testing.assert_allclose(got[k], want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", [1, 2])
def test_a_trial_trains_the_same_alone_and_in_a_pack(tiny_crops, variant):
    cfgs = [ModelConfig(variant=variant, lr=c.lr, reg=c.reg) for c in CONFIGS]  # dropout on
    packed = train_pack(tiny_crops, list(zip(cfgs, SEEDS)), ONE)
    for cfg, seed, got in zip(cfgs, SEEDS, packed):
        alone = train(tiny_crops, cfg, TrainConfig(epochs=1, batch_size=8, seed=seed, data_seed=3))
        assert got.ok and alone.ok
        (_, loss, acc, val_loss, val_acc), = history(got)
        (_, loss1, acc1, val_loss1, val_acc1), = history(alone)
        assert loss == pytest.approx(loss1, rel=1e-5) and val_loss == pytest.approx(val_loss1, rel=1e-5)
        assert (acc, val_acc) == pytest.approx((acc1, val_acc1), abs=1e-6)


def test_a_failed_or_pruned_slice_leaves_the_others_bit_for_bit(tiny_crops):
    two = TrainConfig(epochs=2, batch_size=8, data_seed=3)
    good = ModelConfig(lr=2e-3)
    bad = [good, ModelConfig(reg=1e30), ModelConfig(lr=1e6), ModelConfig(lr=3e-3)]
    seeds = [1, 2, 3, 4]
    baseline = train_pack(tiny_crops, list(zip([good, good, good, good], seeds)), two)
    from model import compiled

    kept = [w.copy() for w in compiled.current().get_slice(0)]
    asked = []
    results = train_pack(tiny_crops, list(zip(bad, seeds)), two,
                         on_epoch=lambda epoch, shown: asked.append(shown) or ({3} if epoch == 1 else ()))
    assert results[1].fail_reason in ("loss became nan in epoch 1", "loss became infinite in epoch 1")
    assert results[1].history == ()
    assert results[3].pruned and results[3].ok and len(results[3].history) == 1
    assert [s is None for s in asked[1]] == [False, True, not results[2].ok, True]
    assert history(results[0]) == history(baseline[0]) and len(results[0].history) == 2
    for got, want in zip(compiled.current().get_slice(0), kept, strict=True):
        assert np.array_equal(got, want)


def test_extracted_slice_predicts_like_the_slice(tiny_crops):
    train_pack(tiny_crops, list(zip(CONFIGS, SEEDS)), ONE)
    from model import compiled

    pack = compiled.current()
    xv, _ = normalized(tiny_crops, "val")
    probs = pack.predict(xv, verbose=0)
    raw = tiny_crops.part("val")[0].astype(np.float32)
    for k, cfg in enumerate(CONFIGS):
        plain = extract(pack, k, cfg)
        np.testing.assert_allclose(plain.predict(xv, verbose=0), probs[:, k], atol=1e-5)
        full = inference_model(plain, tiny_crops.mean, tiny_crops.std)
        np.testing.assert_allclose(full.predict(raw, verbose=0), probs[:, k], atol=1e-5)


def test_train_model_returns_the_plain_network(tiny_crops):
    result, model = train_model(tiny_crops, CONFIGS[1], TrainConfig(epochs=1, batch_size=8, seed=22,
                                                                    data_seed=3))
    assert result.ok and model.count_params() == 423_244 and model.name == "model1"


def test_data_order_is_the_studys_not_the_trials():
    a, b = epoch_order(3, 1, 40), epoch_order(3, 2, 40)
    assert sorted(a) == list(range(40)) and not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(3, 1, 40)) and not np.array_equal(a, epoch_order(4, 1, 40))


def test_slice_adam_is_kerass_adam_per_slice():
    """One step of SliceAdam on slice k equals keras.optimizers.Adam(lr_k) on that slice."""
    pack = PackedCNN(2, 1)
    compile_pack(pack)
    opt = pack.optimizer
    opt.slice_lr.assign(np.array([1e-3, 0.5], np.float32))
    var = pack.output_bias
    var.assign(np.array([[0.1, -0.2], [0.3, 0.4]], np.float32))
    grad = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    opt.apply([grad if v is var else np.zeros(v.shape, np.float32) for v in pack.trainable_variables],
              pack.trainable_variables)
    for k, lr in enumerate((1e-3, 0.5)):
        ref_var = keras.Variable(np.array([[0.1, -0.2], [0.3, 0.4]], np.float32)[k])
        keras.optimizers.Adam(learning_rate=lr).apply([grad[k]], [ref_var])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(var)[k],
                                   keras.ops.convert_to_numpy(ref_var), rtol=1e-6)
