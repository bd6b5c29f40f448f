"""The report's babysitting checks: does this network, on these crops, learn at all?

1. untrained, without regularization, the loss is close to ln 2 (two balanced classes),
   and adding L2 regularization raises it;
2. normalized crops train better than raw 0..255 pixels in the same few epochs;
3. lr = 1e-6 barely moves the loss in 10 epochs, and lr = 1e6 drives it to NaN,
   which is detected and reported rather than crashing (Model 2's BatchNormalization
   can keep the blown-up loss finite, ~1e12, so a loss above 1000 x ln 2 also counts);
4. the network overfits 20 crops to 100 % training accuracy within 200 epochs.

Every check is a function of (Subset or CropSet, SanitySettings, variant) returning
one CheckResult, so each can be run alone with its own thresholds. Every model is built
after seeding from `settings.seed`, so paired runs (reg 0 vs reg, raw vs normalized)
start from the same weights. TensorFlow is imported only when a check runs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np

from dataset.archive import FACE, NON_FACE, CropSet
from dataset.errors import DataError

LN2 = math.log(2.0)


@dataclass(frozen=True)
class SanitySettings:
    samples: int = 200              # training crops for checks 1-3 (half faces)
    batch_size: int = 20
    seed: int = 0
    loss_tolerance: float = 0.1     # check 1: |initial loss - ln 2| below this
    reg: float = 1e1                # check 1: this L2 factor must raise the initial loss
    train_lr: float = 1e-3          # checks 2 and 4: an ordinary learning rate
    compare_epochs: int = 5         # check 2
    min_gain: float = 0.05          # check 2: normalized loss at least 5 % below raw
    tiny_lr: float = 1e-6           # check 3
    tiny_lr_epochs: int = 10
    max_change: float = 0.1         # check 3: |relative loss change| below this
    huge_lr: float = 1e6            # check 3
    huge_lr_epochs: int = 3
    blowup: float = 1e3             # check 3: or a finite loss this many times ln 2
    overfit_samples: int = 20       # check 4 (half faces)
    overfit_epochs: int = 200

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if v < 0 or (v == 0 and f.name not in ("seed", "reg", "min_gain")):
                raise ValueError(f"sanity setting {f.name} must be > 0, got {v!r}")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    measured: dict      # plain numbers and strings
    expected: str       # the pass rule, in words

    def to_dict(self) -> dict:
        """JSON-able (non-finite floats become the strings "nan", "inf", "-inf")."""
        return {**asdict(self), "passed": bool(self.passed),
                "measured": {k: _plain(v) for k, v in self.measured.items()}}


@dataclass(frozen=True)
class Subset:
    x: np.ndarray      # (n, 60, 60, 3) float32, normalized with the train statistics
    raw: np.ndarray    # (n, 60, 60, 3) float32, the same crops as 0..255 pixels
    y: np.ndarray      # (n,) int32, 1 face / 0 non-face


def pick(crops: CropSet, n: int, seed: int = 0) -> Subset:
    """n training crops, half faces and half non-faces (fewer if the split is short)."""
    from dataset.pipeline import normalized

    x, y = normalized(crops, "train")
    raw, _ = crops.part("train")
    rng = np.random.default_rng(seed)
    per_class = [np.flatnonzero(y == c) for c in (FACE, NON_FACE)]
    if min(len(i) for i in per_class) == 0:
        raise DataError("sanity checks need face and non-face crops in the train split")
    keep = np.sort(np.concatenate([rng.permutation(i)[: n // 2] for i in per_class]))
    return Subset(x[keep], raw[keep].astype(np.float32), y[keep].astype(np.int32))


def check_initial_loss(data: Subset, s: SanitySettings, variant: int = 1) -> CheckResult:
    loss, acc = _model(variant, s, reg=0.0).evaluate(data.x, data.y, verbose=0)
    return CheckResult("initial_loss", abs(loss - LN2) < s.loss_tolerance,
                       {"loss": loss, "ln2": LN2, "difference": loss - LN2,
                        "accuracy": acc, "samples": len(data.y)},
                       f"untrained, reg 0: |loss - ln 2| < {s.loss_tolerance:g}")


def check_regularization(data: Subset, s: SanitySettings, variant: int = 1) -> CheckResult:
    plain = _model(variant, s, reg=0.0).evaluate(data.x, data.y, verbose=0)[0]
    with_reg = _model(variant, s, reg=s.reg).evaluate(data.x, data.y, verbose=0)[0]
    return CheckResult("regularization_raises_loss", with_reg > plain * (1 + 1e-3),
                       {"loss_reg0": plain, "loss_reg": with_reg, "reg": s.reg},
                       f"untrained, same weights: loss with reg {s.reg:g} above loss with reg 0")


def check_normalization(data: Subset, s: SanitySettings, variant: int = 1) -> CheckResult:
    runs = {}
    for name, x in (("normalized", data.x), ("raw", data.raw)):
        model = _model(variant, s, lr=s.train_lr)
        _fit(model, x, data.y, s.compare_epochs, s)
        runs[name] = model.evaluate(x, data.y, verbose=0)  # [loss, accuracy]
    (norm_loss, norm_acc), (raw_loss, raw_acc) = runs["normalized"], runs["raw"]
    return CheckResult(
        # a raw run that went NaN counts as beaten, a normalized one that did never wins
        "normalized_beats_raw",
        math.isfinite(norm_loss) and not (norm_loss >= (1 - s.min_gain) * raw_loss),
        {"loss_normalized": norm_loss, "loss_raw": raw_loss, "accuracy_normalized": norm_acc,
         "accuracy_raw": raw_acc, "epochs": s.compare_epochs, "lr": s.train_lr},
        f"after {s.compare_epochs} epochs at lr {s.train_lr:g}: training loss on normalized "
        f"crops at least {s.min_gain:.0%} below raw 0..255 pixels")


def check_tiny_lr(data: Subset, s: SanitySettings, variant: int = 1) -> CheckResult:
    """The loss of the trained weights against the initial weights, both evaluated
    with the run's final BatchNormalization statistics (Model 2): those moving averages
    follow the data whatever the lr is (measured on 200 FDDB crops, 10 epochs at 1e-6,
    they alone took Model 2's evaluated loss from 0.695 to 0.818)."""
    import keras

    model = _model(variant, s, lr=s.tiny_lr)
    initial = [keras.ops.copy(w.value) for w in model.trainable_weights]
    _fit(model, data.x, data.y, s.tiny_lr_epochs, s)
    after = model.evaluate(data.x, data.y, verbose=0)[0]
    for w, value in zip(model.trainable_weights, initial):
        w.assign(value)
    before = model.evaluate(data.x, data.y, verbose=0)[0]
    change = (after - before) / before
    return CheckResult("tiny_lr_barely_moves", abs(change) < s.max_change,
                       {"lr": s.tiny_lr, "loss_before": before, "loss_after": after,
                        "relative_change": change, "epochs": s.tiny_lr_epochs},
                       f"lr {s.tiny_lr:g}, {s.tiny_lr_epochs} epochs: "
                       f"|relative loss change| < {s.max_change:.0%}")


def check_huge_lr(crops: CropSet, s: SanitySettings, variant: int = 1) -> CheckResult:
    """Runs through model.train, the path every trial takes, so what is checked is
    that the workers' NaN detection turns the blow-up into a failed TrainResult."""
    from model.cnn import ModelConfig
    from model.train import TrainConfig, train

    result = train(crops, ModelConfig(variant=variant, lr=s.huge_lr, reg=0.0),
                   TrainConfig(epochs=s.huge_lr_epochs, batch_size=s.batch_size, seed=s.seed))
    worst = max((m.loss for m in result.history), default=None)  # completed epochs only
    if result.fail_reason:
        verdict = result.fail_reason
    elif worst is not None and worst > s.blowup * LN2:  # BatchNormalization can keep a blown-up loss finite
        verdict = f"loss exploded to {worst:.3g} (finite) without failing the run"
    else:
        verdict = "loss stayed finite"
    return CheckResult(
        "huge_lr_diverges", verdict != "loss stayed finite",
        {"lr": s.huge_lr, "outcome": verdict, "epochs_completed": len(result.history),
         "worst_epoch_loss": worst, "samples": int(crops.part("train")[1].size)},
        f"lr {s.huge_lr:g}, up to {s.huge_lr_epochs} epochs: model.train reports the loss "
        f"turning NaN/inf as a failed run (or the loss exceeds {s.blowup:g} x ln 2)")


def check_overfit(data: Subset, s: SanitySettings, variant: int = 1) -> CheckResult:
    model = _model(variant, s, lr=s.train_lr)
    run = _fit(model, data.x, data.y, s.overfit_epochs, s, stop_at_accuracy=1.0)
    reached = bool(run["eval_accuracy"]) and run["eval_accuracy"][-1] >= 1.0
    return CheckResult(
        "overfits_small_set", reached,
        {"samples": len(data.y), "epochs_needed": len(run["loss"]) if reached else None,
         "max_epochs": s.overfit_epochs, "train_accuracy": run["eval_accuracy"][-1],
         "train_loss": run["loss"][-1], "lr": s.train_lr},
        f"reg 0, lr {s.train_lr:g}: 100% accuracy on its {len(data.y)} training crops "
        f"(dropout off) within {s.overfit_epochs} epochs")


def run_checks(crops: CropSet, variant: int = 1, settings: SanitySettings = SanitySettings(),
               on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """All checks in the report's order; `on_result` sees each as soon as it is done."""
    data = pick(crops, settings.samples, settings.seed)
    small = pick(crops, settings.overfit_samples, settings.seed)
    plan = [(check_initial_loss, data), (check_regularization, data),
            (check_normalization, data), (check_tiny_lr, data), (check_huge_lr, crops),
            (check_overfit, small)]
    results = []
    for check, inputs in plan:
        results.append(check(inputs, settings, variant))
        if on_result:
            on_result(results[-1])
    return results


def format_table(results: list[CheckResult]) -> str:
    """A pass/fail table: one line per check with its measured figures, then the rule."""
    width = max((len(r.name) for r in results), default=5)
    lines = [f"{'check':<{width}}  result  measured", "-" * (width + 60)]
    for r in results:
        figures = ", ".join(f"{k} {_short(v)}" for k, v in r.measured.items())
        lines += [f"{r.name:<{width}}  {'PASS' if r.passed else 'FAIL':<6}  {figures}",
                  f"{'':<{width}}          expected: {r.expected}"]
    passed = sum(r.passed for r in results)
    lines.append(f"{passed} of {len(results)} checks passed")
    return "\n".join(lines)


def to_json(results: list[CheckResult]) -> dict:
    """{"passed": all passed, "checks": [CheckResult.to_dict(), ...]} for --json."""
    return {"passed": all(r.passed for r in results), "checks": [r.to_dict() for r in results]}


def _model(variant: int, s: SanitySettings, lr: float = 1e-3, reg: float = 0.0):
    import keras

    from model.cnn import ModelConfig, build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(s.seed)  # same initial weights for paired runs
    return build_model(ModelConfig(variant=variant, lr=lr, reg=reg))


def _fit(model, x, y, epochs: int, s: SanitySettings,
         stop_at_accuracy: float | None = None) -> dict:
    """Train; stop at the first non-finite loss, or once the accuracy on (x, y) with
    dropout off reaches `stop_at_accuracy` (measured after each epoch if given).

    Returns {"loss": [...], "accuracy": [...] (with dropout, as fit reports it),
    "eval_accuracy": [...] (dropout off; only with stop_at_accuracy), "nan_epoch"}.
    """
    import keras

    eval_accuracy: list[float] = []

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if not math.isfinite(float((logs or {}).get("loss", 0.0))):
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if stop_at_accuracy is None:
                return
            predicted = np.argmax(self.model.predict_on_batch(x), axis=1)
            eval_accuracy.append(float(np.mean(predicted == y)))
            if eval_accuracy[-1] >= stop_at_accuracy:
                self.model.stop_training = True

    h = model.fit(x, y, batch_size=s.batch_size, epochs=epochs, shuffle=True, verbose=0,
                  callbacks=[Stop()]).history
    loss = [float(v) for v in h.get("loss", [])]
    nan_epoch = next((i for i, v in enumerate(loss) if not math.isfinite(v)), None)
    return {"loss": loss, "accuracy": [float(v) for v in h.get("accuracy", [])],
            "eval_accuracy": eval_accuracy, "nan_epoch": nan_epoch}


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _short(v) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"
    return str(v)
