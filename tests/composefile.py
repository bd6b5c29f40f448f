"""docker-compose.yml as data: load, interpolate ${VAR} like Compose, and check the
invariants the deployment relies on. Each check returns a list of problems (empty = fine),
so tests can also feed it a broken copy and expect a complaint.

No Docker engine runs where these tests run: this module is what stands in for
`docker compose config` plus a review of the file.
"""
from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"  # the Compose Specification's schema, kept here: a clone has no ../shared

GPU_COMMANDS = ("worker", "final")            # commands that train: need a GPU
DB_COMMANDS = ("init", "worker", "fine", "final")
SECRET_KEY = re.compile(r"pass(word)?|secret|token|api_?key", re.I)
URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s/]+)@")  # scheme://user:PASSWORD@host
ASSIGNED_SECRET = re.compile(r"(?i)\b\w*(?:password|secret|token)\w*=(?![\"']?\$)(\S+)")
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_]\w*))")


class InterpolationError(ValueError):
    pass


def load(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(Path(path).read_text())


class _OverrideLoader(yaml.SafeLoader):
    """Reads Compose's merge tags (!override, !reset) as their plain values."""


for _tag in ("!override", "!reset"):
    _OverrideLoader.add_constructor(_tag, lambda loader, node: (
        loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)))


def doc_yaml_blocks(path: Path) -> list[dict]:
    """The ```yaml blocks of a Markdown file, parsed (Compose merge tags allowed)."""
    blocks = re.findall(r"```yaml\n(.*?)```", Path(path).read_text(), flags=re.S)
    return [yaml.load(textwrap.dedent(b), Loader=_OverrideLoader) for b in blocks]


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines, '#' comments and blank lines skipped (the .env syntax we use)."""
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
            env[key.strip()] = value.strip()
    return env


def interpolate(node, env: dict[str, str]):
    """Compose's interpolation of every string value: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d},
    ${VAR:?err}, ${VAR?err}, ${VAR:+alt}, ${VAR+alt}; $$ is a literal $."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def one(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        value = env.get(name)
        unset, empty = value is None, not value
        missing = empty if op and op.startswith(":") else unset
        if op in (":-", "-"):
            return arg if missing else value
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value
        if op in (":+", "+"):
            return "" if missing else arg
        return value or ""

    return _VAR.sub(one, node)


def variables(node) -> set[str]:
    """Names of the variables a document refers to."""
    found: set[str] = set()
    for s in strings(node):
        found |= {m.group(2) or m.group(5) for m in _VAR.finditer(s) if not m.group(1)}
    return found


def strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def schema_errors(doc: dict) -> list[str]:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    v = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.path)))]


def command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict((item.split("=", 1) + [None])[:2] for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def deps(service: dict) -> dict[str, str]:
    """depends_on as {service: condition} (the short list form means service_started)."""
    d = service.get("depends_on") or {}
    if isinstance(d, list):
        return {name: "service_started" for name in d}
    return {name: spec.get("condition", "service_started") for name, spec in d.items()}


def gpu_problems(doc: dict) -> list[str]:
    problems = []
    for name, svc in doc["services"].items():
        if command(svc)[:1] and command(svc)[0] in GPU_COMMANDS:
            devices = (((svc.get("deploy") or {}).get("resources") or {})
                       .get("reservations") or {}).get("devices") or []
            if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])
                       and ("count" in d or "device_ids" in d) for d in devices):
                problems.append(f"{name} trains but reserves no NVIDIA GPU")
    return problems


def dependency_problems(doc: dict, expected: dict[str, tuple[str, str]]) -> list[str]:
    """`expected` = {service: (dependency, condition)}; plus: every service that touches the
    database waits, directly or through others, for a healthy db."""
    services = doc["services"]
    problems = [f"{s} must depend on {d} with {c}, has {deps(services[s]).get(d)}"
                for s, (d, c) in expected.items() if deps(services.get(s, {})).get(d) != c]
    for name, svc in services.items():
        if command(svc)[:1] and command(svc)[0] in DB_COMMANDS or name == "dashboard":
            if "db" not in _reachable(services, name):
                problems.append(f"{name} uses the database but does not wait for db")
    for name, svc in services.items():
        for d in deps(svc):
            if d not in services:
                problems.append(f"{name} depends on unknown service {d}")
    return problems


def waves(doc: dict, profiles: set[str]) -> list[list[str]]:
    """Services active under `profiles`, db excepted, in the order depends_on lets them
    start: each wave needs only the waves before it."""
    services = {n: s for n, s in doc["services"].items()
                if n != "db" and (not s.get("profiles") or profiles & set(s["profiles"]))}
    done, order = {"db"}, []
    while len(done) < len(services) + 1:
        ready = sorted(n for n, s in services.items() if n not in done and set(deps(s)) <= done)
        if not ready:
            raise ValueError(f"dependency cycle or inactive dependency among {sorted(set(services) - done)}")
        order.append(ready)
        done |= set(ready)
    return order


def _reachable(services: dict, name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for d in deps(services.get(todo.pop(), {})):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def profile_problems(doc: dict) -> list[str]:
    """Whenever a service is active, so are its dependencies (Compose refuses otherwise)."""
    services, problems = doc["services"], []
    for name, svc in services.items():
        mine = set(svc.get("profiles") or [])
        for d in deps(svc):
            theirs = set(services.get(d, {}).get("profiles") or [])
            if theirs and not (mine and mine <= theirs):
                problems.append(f"{name} (profiles {sorted(mine) or 'always'}) depends on "
                                f"{d}, active only in {sorted(theirs)}")
    return problems


def db_problems(doc: dict) -> list[str]:
    db, problems = doc["services"].get("db", {}), []
    test = " ".join((db.get("healthcheck") or {}).get("test") or [])
    if "pg_isready" not in test:
        problems.append("db has no pg_isready healthcheck")
    named = set(doc.get("volumes") or {})
    mounts = [v.split(":") for v in db.get("volumes") or [] if isinstance(v, str)]
    if not any(m[0] in named and m[1] == "/var/lib/postgresql/data" for m in mounts if len(m) > 1):
        problems.append("db keeps its data in no named volume at /var/lib/postgresql/data")
    return problems


def port_problems(doc: dict) -> list[str]:
    """Every published port binds 127.0.0.1 (run after interpolation)."""
    problems = []
    for name, svc in doc["services"].items():
        for p in svc.get("ports") or []:
            host_ip = p.get("host_ip") if isinstance(p, dict) else (
                str(p).rsplit(":", 2)[0] if str(p).count(":") == 2 else None)
            if host_ip != "127.0.0.1":
                problems.append(f"{name} publishes {p!r} beyond 127.0.0.1")
    return problems


def secret_problems(doc: dict) -> list[str]:
    """No literal credential: password-like keys must be *_FILE or ${...}; no URL carries a
    password; no shell assignment of a literal secret (run on the raw, uninterpolated file)."""
    problems = []
    for name, svc in doc["services"].items():
        for key, value in environment(svc).items():
            if SECRET_KEY.search(key) and not key.endswith("_FILE") and "${" not in (value or ""):
                problems.append(f"{name}: {key} has a literal value")
        for key, value in (((svc.get("build") or {}) if isinstance(svc.get("build"), dict)
                            else {}).get("args") or {}).items():
            if SECRET_KEY.search(key):
                problems.append(f"{name}: build arg {key} would bake a secret into the image")
    for s in strings(doc):
        m = URL_PASSWORD.search(re.sub(r"\$\{[^}]*\}", "$", s))  # ${...} is not a literal
        if m and not m.group(1).startswith("$"):
            problems.append(f"URL with a password: {s!r}")
        for m in ASSIGNED_SECRET.finditer(s):
            problems.append(f"literal secret assignment: {m.group(0)!r}")
    return problems


def env_example_problems(env: dict[str, str], used: set[str]) -> list[str]:
    """.env.example: no password values (only *_FILE paths), every variable the compose
    file uses is listed, and nothing stale."""
    problems = [f".env.example: {k} holds a value that looks like a credential" for k, v in env.items()
                if SECRET_KEY.search(k) and not k.endswith("_FILE") and v]
    problems += [f".env.example does not list {v}" for v in sorted(used - set(env))]
    problems += [f".env.example lists {k}, which docker-compose.yml never uses"
                 for k in sorted(set(env) - used)]
    return problems


def dockerfile_problems(text: str, root: Path = ROOT) -> list[str]:
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    instr = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]
    problems = []
    users = [arg.split(":")[0] for op, arg in instr if op == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the image runs as root (no final non-root USER)")
    entry = [arg for op, arg in instr if op == "ENTRYPOINT"]
    if not entry or _json_list(entry[-1]) != ["facehpo"]:
        problems.append(f"ENTRYPOINT must be [\"facehpo\"] (exec form), is {entry[-1:]}")
    for op, arg in instr:
        if op in ("ENV", "ARG") and SECRET_KEY.search(arg.split("=")[0]):
            problems.append(f"{op} {arg!r} would put a secret into the image")
        if op == "COPY" and "--from" not in arg:
            for src in _json_list(arg)[:-1] if arg.startswith("[") else arg.split()[:-1]:
                if not src.startswith("--") and not (root / src).exists():
                    problems.append(f"COPY source {src} does not exist")
    if not any(op == "ARG" and arg.startswith("EXTRAS") for op, arg in instr):
        problems.append("no ARG EXTRAS: the CPU build (--build-arg EXTRAS=) is gone")
    return problems


def dockerfile_entrypoint(text: str | None = None) -> list[str]:
    """The image's ENTRYPOINT (exec form), used when a service sets none."""
    text = DOCKERFILE.read_text() if text is None else text
    entries = [ln.split(None, 1)[1] for ln in text.splitlines() if ln.startswith("ENTRYPOINT")]
    return _json_list(entries[-1]) if entries else []


def _json_list(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None
