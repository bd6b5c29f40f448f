"""No secret in the repository, nothing listening beyond localhost by default, and study
names holding quotes or SQL stored and queried as plain data."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The fake passwords docs and tests use (masking checks); any other literal is a leak.
PLACEHOLDERS = {"password", "pw", "***", "s3cret", "secret", "xxx", "hunter2"}
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+]*://[^\s:/@'\"${}]+:([^\s@/'\"]+)@", re.I)
ASSIGNED = re.compile(r"(?:password|passwd|secret|token|api_key)[\"']?\s*[:=]\s*[\"']([^\"'\s]{4,})[\"']", re.I)
KEYS = re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----|AKIA[0-9A-Z]{16}")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def _leaks(text: str) -> list[str]:
    found = [m.group(0) for m in KEYS.finditer(text)]
    for pattern in (URL_CREDENTIALS, ASSIGNED):
        for m in pattern.finditer(text):
            value = m.group(1)
            fake = value.lower() in PLACEHOLDERS or value.startswith(("$", "{", "<", "%"))
            if not fake and "://" not in value:  # a URL's own password is checked above
                found.append(m.group(0))
    return found


def test_the_scanner_finds_what_it_should():
    # built from pieces, so that this file itself holds no leak for the scan below
    assert _leaks("postgresql://facehpo:" + "hunter2x@db:5432/x") and _leaks("password = " + '"Tr0ub4dor"')
    assert _leaks("-----BEGIN RSA " + "PRIVATE KEY-----")
    assert not _leaks("postgresql+psycopg2://facehpo:PASSWORD@dbhost:5432/facehpo")
    assert not _leaks("postgresql://u:${POSTGRES_PASSWORD}@db/x") and not _leaks("postgresql://u:***@h/x")


def test_no_secret_in_tracked_files():
    assert (ROOT / ".git").exists()
    leaks = {}
    for f in _tracked():
        if not f.is_file() or f.stat().st_size > 2_000_000:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        if hits := _leaks(text):
            leaks[str(f.relative_to(ROOT))] = hits
    assert leaks == {}
    ignored = subprocess.run(["git", "check-ignore", ".env", "secrets/postgres_password"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == [".env", "secrets/postgres_password"]  # where real secrets go, never committed


def test_defaults_stay_on_this_machine():
    from study import storage

    assert storage.DEFAULT_URL.startswith("sqlite:///")  # a local file, no server at all
    for py in list((ROOT / "study").glob("*.py")) + list((ROOT / "model").glob("*.py")):
        assert "0.0.0.0" not in py.read_text(), py


def test_optuna_dashboard_listens_on_localhost_only_by_default(tmp_path):
    """The README's `optuna-dashboard "$FACEHPO_STORAGE"`, started for real: its socket is
    bound to 127.0.0.1, not to every interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path}/d.db"
    import optuna

    optuna.create_study(storage=db, study_name="s")
    dash = Path(sys.executable).parent / "optuna-dashboard"
    p = subprocess.Popen([str(dash), db, "--port", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        bound = _wait_listening(port, 60)
    finally:
        p.terminate()
        p.wait(timeout=30)
    assert bound == {"127.0.0.1"}


def _wait_listening(port: int, timeout: float) -> set[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp{,6}."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for row in Path(table).read_text().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:
                    found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout}s")


NASTY = "x'; DROP TABLE trials; --"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_study_name_with_sql_in_it_is_just_a_name(backend, request, tmp_path):
    from tests.study.cli_runner import facehpo
    from tests.study.live import by_state, tiny_crops, trials

    url = f"sqlite:///{tmp_path}/f.db" if backend == "sqlite" else request.getfixturevalue("fresh_pg")
    data = tiny_crops(tmp_path, train=12, val=4, test=4)
    study = f"{NASTY}-coarse"
    init = facehpo("init", "--name", NASTY, "--trials", 1, "--epochs", 1, "--storage", url,
                   "--data", data, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    work = facehpo("worker", "--study", study, "--storage", url, "--data", data, cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    report = facehpo("report", "--study", study, "--storage", url, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert NASTY in report.stdout
    listing = facehpo("report", "--storage", url, cwd=tmp_path)
    assert listing.stdout.strip() == f"studies: {study}"
    assert by_state(trials(url, study)) == {"COMPLETE": 1}  # the trials table is still there
