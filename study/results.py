"""Ranking trials and printing the report's top-10 table. No TensorFlow, no database."""
from __future__ import annotations

import math

from optuna.trial import FrozenTrial, TrialState


def ranked(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """COMPLETE trials, best first: highest validation accuracy, ties to the lower
    validation loss, then to the lower trial number."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]

    def key(t: FrozenTrial):
        loss = t.user_attrs.get("val_loss")
        return (-t.value, loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf,
                t.number)

    return sorted(done, key=key)


def top_table(trials: list[FrozenTrial], k: int = 10) -> str:
    """The report's table: rank, validation accuracy, lr, reg, trial number."""
    rows = [f"{'rank':>4}  {'val_acc':>7}  {'lr':>10}  {'reg':>10}  {'trial':>5}"]
    for i, t in enumerate(ranked(trials)[:k], 1):
        rows.append(f"{i:>4}  {t.value:>7.4f}  {t.params['lr']:>10.3e}  {t.params['reg']:>10.3e}"
                    f"  {t.number:>5}")
    if len(rows) == 1:
        rows.append("  (no COMPLETE trial yet)")
    return "\n".join(rows)


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def study_report(study, k: int = 10) -> str:
    """What `facehpo report --study NAME` prints."""
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    counts = ", ".join(f"{n} {s}" for s, n in sorted(state_counts(trials).items())) or "no trials"
    lines = [f"study {study.study_name} (stage {attrs.get('stage', '?')}, model {attrs.get('model', '?')}, "
             f"{attrs.get('epochs', '?')} epochs, data {attrs.get('data_source', '?')}): {counts}"]
    if attrs.get("stage") == "fine":
        space = attrs.get("space", {})
        lines.append(f"derived from {attrs.get('parent')} by rule {attrs.get('rule')} (k={attrs.get('k')}): "
                     f"lr {_span(space.get('lr'))}, reg {_span(space.get('reg'))}")
    if attrs.get("stage") == "final":
        for t in ranked(trials)[:1]:
            lines.append(f"final: trial {t.user_attrs.get('source_trial')} of {attrs.get('parent')} "
                         f"retrained: val_acc {t.value:.4f}, test_acc {t.user_attrs.get('test_accuracy')}, "
                         f"confusion [[tn, fp], [fn, tp]] = {t.user_attrs.get('confusion')}")
    lines.append(top_table(trials, k))
    return "\n".join(lines)


def _span(r) -> str:
    if not r:
        return "?"
    return f"10^({math.log10(r[0]):.2f}..{math.log10(r[1]):.2f}) = [{r[0]:.3g}, {r[1]:.3g}]"
