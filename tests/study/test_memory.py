"""One worker, 50 tiny trials: its resident memory stays flat after warm-up.

Measured from outside, as an operator would: the worker prints a line per finished
trial, and at each line the test reads the process's VmRSS from /proc."""
import re
from pathlib import Path

import pytest

from tests.study.cli_runner import facehpo, start
from tests.study.live import by_state, tiny_crops, trials

N = 50
LINE = re.compile(r"^\[mem-coarse\] trial \d+ .*\((\d+)/\d+ finished\)$")


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_fifty_trials_in_one_worker_keep_memory_flat(tmp_path):
    data = tiny_crops(tmp_path, train=12, val=4, test=4)  # 20 crops
    url = f"sqlite:///{tmp_path}/facehpo.db"
    init = facehpo("init", "--name", "mem", "--trials", N, "--epochs", 1, "--storage", url,
                   "--data", data, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    w = start("worker", "--study", "mem-coarse", "--storage", url, "--data", data, cwd=tmp_path)
    rss = {}
    for line in w.stderr:  # one line per finished trial, read while the worker runs
        m = LINE.match(line.strip())
        if m:
            rss[int(m.group(1))] = _rss_mb(w.pid)
    assert w.wait(timeout=60) == 0
    assert by_state(trials(url, "mem-coarse")) == {"COMPLETE": N}
    assert sorted(rss) == list(range(1, N + 1))
    figures = ", ".join(f"after trial {k}: {rss[k]:.0f} MB" for k in (1, 10, 25, 50))
    print(f"worker RSS {figures}")
    assert rss[50] <= 1.10 * rss[10], f"memory grows: {figures}"
