"""The peer: KerasTuner's RandomSearch against facehpo's coarse stage, same run.

Both search Model 1 (the same `model.cnn` architecture, Adam, L2 on every kernel) over
the report's coarse ranges with log sampling (lr 1e-6..1e-3, reg 1e-5..1e5), on the
same real FDDB crops (1,600 train / 400 val, normalized alike), batch 20, the same
number of trials and epochs, the same seed number. facehpo: `create_coarse` + one
`run_worker` on an embedded SQLite file (the `facehpo pipeline` default); KerasTuner:
`RandomSearch(...).search(x, y, validation_data=...)`. The two alternate per seed.

Wall time covers creating the study / tuner through the last trial. Accuracy is
compared as facehpo's value is defined: the best trial's validation accuracy after
its last epoch (KerasTuner's own score, the best epoch of the best trial, is printed
too). Each system draws its own random configurations, so accuracies differ by luck
of the draw at this size; the full mode runs two seeds.

    python benchmarks/bench_kerastuner.py [--quick | --dry-run]
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c

LR, REG = (1e-6, 1e-3), (1e-5, 1e5)  # study.space.COARSE, checked below


def run_facehpo(crops, trials: int, epochs: int, seed: int, tmp: Path, workers: int = 0,
                data: Path | None = None) -> tuple:
    """(wall seconds, best last-epoch val accuracy). workers=0: one worker in this
    process; workers=N: N `facehpo worker` processes (the CLI), started and waited for."""
    from study.results import ranked
    from study.stages import StageConfig, create_coarse
    from study.storage import StorageConfig, open_storage
    from study.worker import WorkerConfig, run_worker

    t = time.perf_counter()
    url = f"sqlite:///{tmp}/facehpo-{seed}-{workers}.db"
    storage = open_storage(StorageConfig(url=url), create=True)
    study = create_coarse(storage, StageConfig(name="peer", trials=trials, epochs=epochs, seed=seed),
                          crops.meta)
    if workers:
        cmd = [sys.executable, "-m", "study.cli", "worker", "--study", study.study_name, "--storage", url,
               "--data", str(data), "--out", str(tmp)]
        env = {**os.environ, "PYTHONPATH": str(c.ROOT)}
        procs = [subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("a facehpo worker failed")
    else:
        run_worker(storage, crops, WorkerConfig(study=study.study_name, out_dir=tmp, progress=False))
    wall = time.perf_counter() - t
    best = ranked(study.get_trials(deepcopy=False))[0]
    storage.engine.dispose()
    return wall, best.value


def run_kerastuner(crops, trials: int, epochs: int, seed: int, tmp: Path) -> tuple:
    """(wall seconds, best last-epoch val accuracy, KerasTuner's best score, trials run)."""
    import keras
    import keras_tuner as kt

    from dataset.pipeline import normalized
    from model.cnn import ModelConfig, build_model

    def build(hp):
        lr = hp.Float("lr", *LR, sampling="log")
        reg = hp.Float("reg", *REG, sampling="log")
        return build_model(ModelConfig(variant=1, lr=lr, reg=reg))

    (x, y), (xv, yv) = normalized(crops, "train"), normalized(crops, "val")
    keras.utils.set_random_seed(seed)
    t = time.perf_counter()
    tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=trials, seed=seed,
                            directory=str(tmp), project_name=f"kt-{seed}", overwrite=True)
    tuner.search(x, y, batch_size=20, epochs=epochs, validation_data=(xv, yv), verbose=0)
    wall = time.perf_counter() - t
    done = [tr for tr in tuner.oracle.get_best_trials(num_trials=trials)
            if tr.metrics.exists("val_accuracy")]  # a failed trial (NaN loss) has no metrics
    last = max(tr.metrics.get_history("val_accuracy")[-1].value[0] for tr in done)
    return wall, last, done[0].score, len(tuner.oracle.trials)


def warm_up(crops) -> None:
    """One tiny fit before the timed runs, so TensorFlow's one-off start-up cost
    (oneDNN initialisation, first graph) falls on neither system."""
    import keras

    from dataset.pipeline import normalized
    from model.cnn import ModelConfig, build_model

    x, y = normalized(crops, "train")
    build_model(ModelConfig()).fit(x[:40], y[:40], batch_size=20, epochs=1, verbose=0)
    keras.backend.clear_session()


def main(argv=None) -> int:
    args = c.parser(__doc__).parse_args(argv)
    trials, epochs, seeds = {"dry-run": (1, 1, (0,)), "quick": (10, 2, (0,)),
                             "full": (10, 2, (0, 1))}[c.mode(args)]
    crops_file = c.crops_path(args)
    import keras_tuner

    from dataset.archive import load_crops
    from study.space import COARSE

    assert COARSE.to_dict() == {"lr": list(LR), "reg": list(REG)}, COARSE.to_dict()
    crops = load_crops(crops_file)
    c.header("peer: KerasTuner RandomSearch", args, keras_tuner=keras_tuner.__version__,
             run=f"{trials} trials x {epochs} epochs, Model 1, batch 20, seeds {seeds}, {crops_file}")
    systems = ("facehpo", "facehpo-2-workers", "kerastuner")
    walls, accs = {k: [] for k in systems}, {k: [] for k in systems}
    warm_up(crops)
    with tempfile.TemporaryDirectory(prefix="facehpo-peer-") as tmp:
        for i, seed in enumerate(seeds):
            for system in (systems if i % 2 == 0 else systems[::-1]):
                extra = ""
                if system == "facehpo":
                    wall, acc = run_facehpo(crops, trials, epochs, seed, Path(tmp))
                elif system == "facehpo-2-workers":
                    wall, acc = run_facehpo(crops, trials, epochs, seed, Path(tmp), workers=2, data=crops_file)
                else:
                    wall, acc, score, ran = run_kerastuner(crops, trials, epochs, seed, Path(tmp))
                    extra = f" (KerasTuner's score, best epoch: {score:.4f}; {ran} trials)"
                walls[system].append(wall)
                accs[system].append(acc)
                print(f"seed {seed} {system:10s} wall {wall:8.2f} s  best val accuracy (last epoch) "
                      f"{acc:.4f}{extra}", flush=True)
    acc_k = max(accs["kerastuner"])
    for system in systems[:2]:
        ratio = sum(walls[system]) / sum(walls["kerastuner"])
        acc_f = max(accs[system])
        print(f"total wall: {system} {sum(walls[system]):.2f} s, KerasTuner {sum(walls['kerastuner']):.2f} s; "
              f"best val accuracy over seeds: {system} {acc_f:.4f}, KerasTuner {acc_k:.4f}")
        c.verdict(f"{system} wall / KerasTuner wall", ratio, "<= 0.6", ratio <= 0.6)
        c.verdict(f"{system} best val accuracy - KerasTuner's", acc_f - acc_k, ">= 0", acc_f >= acc_k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
