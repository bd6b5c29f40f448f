"""docker-compose.yml, .env.example and the Dockerfile, checked without a Docker engine:
the Compose schema, the deployment's invariants, and the CLI accepting every command.
Each invariant also gets a broken copy, to show its check can fail."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from tests import composefile as cf

EXPECTED_DEPS = {
    "init": ("db", "service_healthy"),
    "worker": ("init", "service_completed_successfully"),
    "dashboard": ("init", "service_completed_successfully"),
    "fine": ("worker", "service_completed_successfully"),
    "worker-fine": ("fine", "service_completed_successfully"),
    "final": ("worker-fine", "service_completed_successfully"),
}


@pytest.fixture(scope="module")
def raw() -> dict:
    return cf.load()


@pytest.fixture(scope="module")
def env() -> dict:
    return cf.read_env_file()


@pytest.fixture(scope="module")
def resolved(raw, env) -> dict:
    """The file as `docker compose config` would see it with .env = .env.example."""
    return cf.interpolate(raw, env)


def test_schema_valid_before_and_after_interpolation(raw, resolved):
    assert cf.schema_errors(raw) == []
    assert cf.schema_errors(resolved) == []


def test_schema_check_can_fail(raw):
    bad = copy.deepcopy(raw)
    bad["services"]["worker"]["depends_on"]["init"]["condition"] = "service_done"
    bad["services"]["db"]["healtcheck"] = {}
    errors = cf.schema_errors(bad)
    assert any("services/worker/depends_on" in e for e in errors), errors
    assert any("services/db" in e and "healtcheck" in e for e in errors), errors


def test_only_defaults_needed(raw):
    """With no .env at all every ${...} has a default: `docker compose config` works out of the box."""
    assert cf.schema_errors(cf.interpolate(raw, {})) == []


def test_interpolation_follows_compose_rules():
    env = {"SET": "v", "EMPTY": ""}
    assert cf.interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$x $SET", env) == "v d  d $x v"
    assert cf.interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    with pytest.raises(cf.InterpolationError, match="UNSET"):
        cf.interpolate({"a": ["${UNSET:?set it}"]}, env)


def test_training_services_reserve_a_gpu(resolved):
    assert cf.gpu_problems(resolved) == []
    trainers = {n for n, s in resolved["services"].items() if cf.command(s)[:1] in (["worker"], ["final"])}
    assert trainers == {"worker", "worker-fine", "final"}
    gpu = resolved["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_gpu_check_can_fail(resolved):
    bad = copy.deepcopy(resolved)
    del bad["services"]["final"]["deploy"]
    bad["services"]["worker-fine"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] = "amd"
    assert sorted(cf.gpu_problems(bad)) == [
        "final trains but reserves no NVIDIA GPU", "worker-fine trains but reserves no NVIDIA GPU"]


def test_stages_wait_for_each_other(resolved):
    assert cf.dependency_problems(resolved, EXPECTED_DEPS) == []
    for name in ("init", "fine", "final", "data"):
        assert resolved["services"][name]["restart"] == "no"  # one-shot


def test_dependency_check_can_fail(resolved):
    bad = copy.deepcopy(resolved)
    bad["services"]["init"]["depends_on"]["db"]["condition"] = "service_started"
    bad["services"]["dashboard"]["depends_on"] = {}
    bad["services"]["fine"]["depends_on"] = ["nosuch"]
    problems = cf.dependency_problems(bad, EXPECTED_DEPS)
    assert any(p.startswith("init must depend on db with service_healthy") for p in problems)
    assert "dashboard uses the database but does not wait for db" in problems
    assert "fine depends on unknown service nosuch" in problems


def test_profiles_bring_their_dependencies(resolved):
    assert cf.profile_problems(resolved) == []
    profiles = {n: s.get("profiles") for n, s in resolved["services"].items()}
    assert profiles["fine"] == ["fine", "final"] and profiles["final"] == ["final"]
    assert profiles["worker"] is None and profiles["dashboard"] is None


def test_profile_check_can_fail(resolved):
    bad = copy.deepcopy(resolved)
    bad["services"]["worker-fine"]["profiles"] = ["fine"]  # --profile final alone: no worker-fine
    assert cf.profile_problems(bad) == [
        "final (profiles ['final']) depends on worker-fine, active only in ['fine']"]


def test_stages_start_in_order(raw):
    assert cf.waves(raw, {"fine", "final"}) == [
        ["init"], ["dashboard", "worker"], ["fine"], ["worker-fine"], ["final"]]
    assert cf.waves(raw, set()) == [["init"], ["dashboard", "worker"]]
    assert cf.waves(raw, {"data"}) == [["data", "init"], ["dashboard", "worker"]]
    bad = copy.deepcopy(raw)
    bad["services"]["init"]["depends_on"] = {"worker": {"condition": "service_started"}}
    with pytest.raises(ValueError, match="cycle"):
        cf.waves(bad, set())


def test_db_has_healthcheck_and_named_volume(resolved):
    assert cf.db_problems(resolved) == []
    bad = copy.deepcopy(resolved)
    bad["services"]["db"]["healthcheck"]["test"] = ["CMD", "true"]
    bad["services"]["db"]["volumes"] = ["./pg:/var/lib/postgresql/data"]  # bind mount, not named
    assert len(cf.db_problems(bad)) == 2


def test_ports_bind_loopback_only(resolved):
    assert cf.port_problems(resolved) == []
    assert resolved["services"]["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    bad = copy.deepcopy(resolved)
    bad["services"]["dashboard"]["ports"] = ["8080:8080"]
    bad["services"]["db"]["ports"] = [{"target": 5432, "published": "5432", "host_ip": "0.0.0.0"}]
    assert len(cf.port_problems(bad)) == 2


def test_no_literal_secrets(raw):
    assert cf.secret_problems(raw) == []
    db_env = cf.environment(raw["services"]["db"])
    assert db_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in db_env
    assert raw["secrets"]["postgres_password"] == {"file": "${POSTGRES_SECRET_FILE:-./secrets/postgres_password}"}


@pytest.mark.parametrize("mutate, complaint", [
    (lambda d: d["services"]["db"]["environment"].update(POSTGRES_PASSWORD="hunter2"),
     "db: POSTGRES_PASSWORD has a literal value"),
    (lambda d: d["services"]["worker"].update(environment={
        "FACEHPO_STORAGE": "postgresql+psycopg2://facehpo:hunter2@db:5432/facehpo"}),
     "URL with a password: 'postgresql+psycopg2://facehpo:hunter2@db:5432/facehpo'"),
    (lambda d: d["services"]["dashboard"].update(entrypoint=["sh", "-c", "PGPASSWORD=hunter2 exec x"]),
     "literal secret assignment: 'PGPASSWORD=hunter2'"),
    (lambda d: d["services"]["init"].update(build={"context": ".", "args": {"DB_PASSWORD": "${X}"}}),
     "init: build arg DB_PASSWORD would bake a secret into the image"),
], ids=["env", "url", "shell", "build-arg"])
def test_secret_check_can_fail(raw, mutate, complaint):
    bad = copy.deepcopy(raw)
    mutate(bad)
    assert cf.secret_problems(bad) == [complaint]


def test_env_example_is_placeholders_and_complete(raw, env):
    assert cf.env_example_problems(env, cf.variables(raw)) == []
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env)


def test_env_example_check_can_fail(raw, env):
    bad = {**env, "POSTGRES_PASSWORD": "s3cret", "STALE": "1"}
    del bad["FACEHPO_TRIALS"]
    assert sorted(cf.env_example_problems(bad, cf.variables(raw))) == [
        ".env.example does not list FACEHPO_TRIALS",
        ".env.example lists POSTGRES_PASSWORD, which docker-compose.yml never uses",
        ".env.example lists STALE, which docker-compose.yml never uses",
        ".env.example: POSTGRES_PASSWORD holds a value that looks like a credential"]


def test_documented_override_is_valid(raw):
    """docs/containers.md's per-GPU override: schema-valid, pins devices, extends real services."""
    blocks = cf.doc_yaml_blocks(cf.ROOT / "docs" / "containers.md")
    assert len(blocks) == 1
    override = blocks[0]
    assert cf.schema_errors(override) == []
    pinned = {name: svc["deploy"]["resources"]["reservations"]["devices"]
              for name, svc in override["services"].items() if "deploy" in svc}
    assert sorted(pinned) == ["worker", "worker-gpu1"]
    assert [d[0]["device_ids"] for d in pinned.values()] == [["0"], ["1"]]
    assert all(d[0]["driver"] == "nvidia" and "count" not in d[0] for d in pinned.values())
    ext = override["services"]["worker-gpu1"]["extends"]
    assert (cf.ROOT / ext["file"]).is_file() and ext["service"] in raw["services"]
    merged = copy.deepcopy(raw)
    merged["services"]["worker-gpu1"] = {**raw["services"]["worker"], "deploy": override[
        "services"]["worker-gpu1"]["deploy"]}
    merged["services"]["fine"]["depends_on"].update(override["services"]["fine"]["depends_on"])
    assert cf.gpu_problems(merged) == [] and cf.profile_problems(merged) == []
    assert cf.waves(merged, {"fine"})[1:3] == [["dashboard", "worker", "worker-gpu1"], ["fine"]]


def test_dockerfile():
    assert cf.dockerfile_problems(cf.DOCKERFILE.read_text()) == []


def test_dockerfile_check_can_fail():
    text = cf.DOCKERFILE.read_text()
    baseline = set(cf.dockerfile_problems(text))
    bad = text.replace("USER facehpo", "USER root").replace('ENTRYPOINT ["facehpo"]', "ENTRYPOINT facehpo")
    bad += "\nENV DB_PASSWORD=x\nCOPY nosuchdir ./x\n"
    problems = set(cf.dockerfile_problems(bad.replace("ARG EXTRAS=gpu", ""))) - baseline
    assert len(problems) == 5, problems


def test_dockerignore_keeps_what_the_build_copies():
    ignored = [ln.strip() for ln in (cf.ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "dataset", "model", "study"):
        assert needed not in ignored and f"{needed}/" not in ignored
    for secret in (".env", "secrets/", ".git"):
        assert secret in ignored


def _cli_args(resolved, service):
    return cf.command(resolved["services"][service])


@pytest.mark.parametrize("service", ["init", "worker", "fine", "worker-fine", "final", "data"])
def test_cli_accepts_each_command(resolved, service):
    """The container's command is the CLI: each one must parse (flags and values)."""
    from study.parser import build_parser

    args = build_parser().parse_args(_cli_args(resolved, service))
    assert args.command == _cli_args(resolved, service)[0]


def test_compose_defaults_are_the_cli_defaults(raw):
    """Budgets left unset in .env must mean what the CLI means when the flag is absent."""
    from study.parser import build_parser, effective

    parse = build_parser().parse_args
    defaults = cf.interpolate(raw, {})["services"]
    for service, sub in (("init", ["init"]), ("fine", ["fine"]), ("final", ["final"])):
        cmd = cf.command(defaults[service])
        cli = effective(parse(sub))
        for flag, value in zip(cmd[1::2], cmd[2::2]):
            key = flag.lstrip("-").replace("-", "_")
            assert str(cli[key]) == value, f"{service} {flag}: compose {value}, CLI {cli[key]}"


def _copied(text: str) -> list[str]:
    """Sources of the Dockerfile's COPY instructions (shell form), in order."""
    return [src for ln in text.splitlines() if ln.startswith("COPY ") for src in ln.split()[1:-1]]


def test_image_copies_every_package():
    """A package added to pyproject.toml but not COPYed would be missing from the image."""
    import tomllib

    found = tomllib.loads((cf.ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = [p for p in found["find"]["include"] if "." not in p] if isinstance(found, dict) else found
    copied = _copied(cf.DOCKERFILE.read_text())
    assert sorted(p for p in copied if (cf.ROOT / p).is_dir()) == sorted(packages)
    assert {"pyproject.toml", "README.md"} <= set(copied)


def _requirements_step(extras: str) -> list[str]:
    """The Dockerfile's dependency layer: the python3 -c program that lists what to install."""
    import shlex
    import subprocess
    import sys

    text = re.sub(r"\\\n", "", cf.DOCKERFILE.read_text())
    program = shlex.split(re.search(r"python3 -c ('[^']*')", text).group(1))[0]
    assert "/tmp/pyproject.toml" in program  # where the requirements stage COPYs it
    program = program.replace("/tmp/pyproject.toml", str(cf.ROOT / "pyproject.toml"))
    out = subprocess.run([sys.executable, "-c", program, extras], check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def test_image_dependency_layer_lists_the_requirements():
    """EXTRAS=gpu adds the gpu extra; EXTRAS=cpu swaps tensorflow for tensorflow-cpu; the
    project's other requirements are the same in all three."""
    import tomllib

    project = tomllib.loads((cf.ROOT / "pyproject.toml").read_text())["project"]
    deps, (tf,) = project["dependencies"], [d for d in project["dependencies"] if d.startswith("tensorflow>")]
    assert _requirements_step("") == deps
    assert _requirements_step("gpu") == deps + project["optional-dependencies"]["gpu"]
    cpu = _requirements_step("cpu")
    assert "tensorflow-cpu" + tf[len("tensorflow"):] in cpu and tf not in cpu
    assert sorted(set(cpu) - {"tensorflow-cpu" + tf[len("tensorflow"):]}) == sorted(set(deps) - {tf})


@pytest.mark.slow
def test_image_pip_steps_build(tmp_path):
    """The Dockerfile's last pip step, run as a wheel build without Docker: the wheel must
    hold every module, the SQL files and the `facehpo` entry point."""
    import shutil
    import subprocess
    import sys
    import zipfile

    def wheel(src: Path) -> zipfile.ZipFile:
        out = tmp_path / f"dist-{src.name}"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                       check=True, capture_output=True, text=True, timeout=600)
        return zipfile.ZipFile(next(out.glob("facehpo-*.whl")))

    real = tmp_path / "real"
    real.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(cf.ROOT / f, real / f)
    for pkg in ("dataset", "model", "study"):
        shutil.copytree(cf.ROOT / pkg, real / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    expected = {str(p.relative_to(real)) for p in real.rglob("*") if p.suffix in (".py", ".sql")}
    names = set(wheel(real).namelist())
    assert expected and expected <= names, sorted(expected - names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "facehpo = study.cli:main" in zipfile.ZipFile(next((tmp_path / "dist-real").glob("*.whl"))).read(entry).decode()


def test_cpu_override_builds_the_cpu_image_and_drops_every_gpu_reservation(raw):
    """docker-compose.cpu.yml (for users and the docker tests): schema-valid, EXTRAS=cpu for
    every service that builds the image, `deploy: !reset` for every one that reserves a GPU."""
    import yaml

    text = (cf.ROOT / "docker-compose.cpu.yml").read_text()
    override = yaml.load(text, Loader=cf._OverrideLoader)
    assert cf.schema_errors(override) == []
    builds = {n for n, s in raw["services"].items() if "build" in s}
    gpus = {n for n, s in raw["services"].items() if "deploy" in s}
    svc = override["services"]
    assert {n for n in svc if svc[n]["build"]["args"] == {"EXTRAS": "cpu"}} == builds
    assert {n for n in svc if "deploy" in svc[n]} == gpus and all(svc[n]["deploy"] == {} for n in gpus)
    assert text.count("deploy: !reset {}") == len(gpus)  # written out: through an alias Compose ignores it
