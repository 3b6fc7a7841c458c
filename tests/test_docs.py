"""The docs say only true things: commands, settings and env vars exist; references are current.

Every fenced code block and inline code span of README.md and docs/*.md is read:
`watchdog …` command lines must parse with the real CLI parser, every `WATCHDOG_*`
variable must name a setting (and the documented `NAME=value` examples must load),
every dotted settings path must exist in the Settings model, every YAML block that is
settings (or a rules file) must validate, and every relative link must point at a file.
The generated references (configuration, detectors, schema) are regenerated in memory and
compared with the files. The deploy/ files are held to the same standard.
"""

from __future__ import annotations

import re
import shlex
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from detectors.context_rules import parse_rules
from tests.conftest import ROOT
from watchdog import docs as gen
from watchdog.cli import build_parser
from watchdog.demo.scenarios import DEMO_CONFIG
from watchdog.errors import ConfigError
from watchdog.settings import Settings, load_settings

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEPLOY = ROOT / "deploy"
# Environment variables read by watchdog.guard (the agent side), not settings.
GUARD_ENV = {"WATCHDOG_URL"}


@dataclass(frozen=True)
class Block:
    file: Path
    lang: str
    text: str


def blocks(path: Path) -> list[Block]:
    out, lang, lines, inside = [], "", [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and not inside:
            inside, lang, lines = True, fence.group(1), []
        elif line.strip().startswith("```") and inside:
            out.append(Block(path, lang, "\n".join(lines)))
            inside = False
        elif inside:
            lines.append(line)
    return out


def inline_spans(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


def all_blocks() -> list[Block]:
    return [b for f in DOC_FILES for b in blocks(f)]


def doc_id(item: Any) -> str:
    return str(item)[:60]


# -- commands -------------------------------------------------------------------------------


def command_lines() -> Iterator[tuple[Path, str]]:
    for b in all_blocks():
        if b.lang not in ("", "sh", "bash", "shell", "console"):
            continue
        for line in b.text.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if re.match(r"^(\S*/)?watchdog\s", line) or re.match(r"^(\w+=\S+\s+)+watchdog\s", line):
                yield b.file, line


def argv_of(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        tokens.pop(0)
    argv = []
    for tok in tokens[1:]:  # after the program name
        if tok in ("|", "||", "&&", ";", ">", ">>", "<", "&", "2>&1"):
            break
        argv.append(tok)
    return argv


COMMANDS = list(command_lines())


def test_the_docs_show_watchdog_commands() -> None:
    subcommands = {argv_of(line)[0] for _, line in COMMANDS}
    assert {"demo", "sql", "run", "hold", "kill", "status"} <= subcommands


@pytest.mark.parametrize(("path", "line"), COMMANDS, ids=[doc_id(c[1]) for c in COMMANDS])
def test_every_command_in_a_code_block_parses(path: Path, line: str) -> None:
    argv = argv_of(line)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{path.name}: `{line}` is not a valid watchdog command")
    assert callable(args.func)


def _subparsers() -> dict[str, Any]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)  # type: ignore[attr-defined]


def test_every_inline_watchdog_command_names_real_subcommands_and_flags() -> None:
    subs = _subparsers()
    seen = 0
    for path in DOC_FILES:
        for span in inline_spans(path):
            if not re.match(r"^(\S*/)?watchdog \S", span):
                continue
            seen += 1
            words = span.split()
            names = words[1].split("|")
            for name in names:
                assert name in subs, f"{path.name}: `{span}` names no subcommand {name!r}"
            known = {o for n in names for a in subs[n]._actions for o in a.option_strings}
            for word in words[2:]:
                flag = word.split("=")[0]
                if flag.startswith("--"):
                    assert flag in known, f"{path.name}: `{span}`: {flag} is not an option"
    assert seen >= 5


# -- settings, env vars -------------------------------------------------------------------------


def _model(ann: Any) -> type[BaseModel] | None:
    for cand in (ann, *typing.get_args(ann)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _container(ann: Any) -> tuple[bool, type[BaseModel] | None]:
    """(is a list/dict, the model of its items if any), through Optional and Annotated."""
    for cand in (ann, *typing.get_args(ann)):
        origin = typing.get_origin(cand)
        if origin is typing.Annotated:
            return _container(typing.get_args(cand)[0])
        if origin in (list, dict):
            return True, _model(typing.get_args(cand)[-1])
    return False, None


def resolve(parts: list[str]) -> str | None:
    """Walk Settings along `parts` (`<x>`, `*` and `[]` are placeholders); None when it exists."""
    model: type[BaseModel] | None = Settings
    after_container = False
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if after_container:  # this part is a map key or a list index
            after_container = False
            continue
        if part == "*" or part.startswith("<"):
            return None  # any key of this level
        if model is None:
            return f"{where}: {'.'.join(parts[:i])} has no sub-keys"
        field = model.model_fields.get(part)
        if field is None:
            return f"{where} is not a setting"
        is_container, item = _container(field.annotation)
        if is_container:
            model, after_container = item, True
        else:
            model = _model(field.annotation)
    return None


def env_parts(name: str) -> list[str]:
    return [p.lower() for p in name.removeprefix("WATCHDOG_").split("__")]


def _env_names() -> list[tuple[str, str]]:
    found = []
    for path in [*DOC_FILES, *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]:
        for name in sorted(set(re.findall(r"\bWATCHDOG_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))):
            found.append((path.name, name))
    return found


ENV_NAMES = _env_names()


@pytest.mark.parametrize(("where", "name"), ENV_NAMES, ids=[f"{w}:{n}" for w, n in ENV_NAMES])
def test_every_env_var_shown_is_a_setting(where: str, name: str) -> None:
    if name in GUARD_ENV:
        guard_src = (ROOT / "watchdog" / "guard.py").read_text()
        assert name in guard_src, f"{where}: {name} is neither a setting nor read by the guard"
        return
    problem = resolve(env_parts(name))
    assert problem is None, f"{where}: {name}: {problem}"


def _env_examples() -> list[tuple[str, str, str]]:
    out = []
    for path in DOC_FILES:
        texts = [b.text for b in blocks(path)] + inline_spans(path)
        for text in texts:
            for m in re.finditer(r"\b(WATCHDOG_[A-Z0-9_]+)=('[^']*'|\"[^\"]*\"|[^\s`]+)", text):
                value = m.group(2).strip("'\"")
                if "…" not in value and m.group(1) not in GUARD_ENV:
                    out.append((path.name, m.group(1), value))
    return out


ENV_EXAMPLES = _env_examples()


@pytest.mark.parametrize(("where", "name", "value"), ENV_EXAMPLES, ids=[e[1] for e in ENV_EXAMPLES])
def test_every_env_example_loads(
    where: str, name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    settings = load_settings()
    cur: Any = settings
    for part in env_parts(name):
        cur = getattr(cur, part)
    if hasattr(cur, "get_secret_value"):
        cur = cur.get_secret_value()
    assert str(cur) == value or cur == yaml.safe_load(value), (where, name, cur)


def _field(path: str) -> Any:
    model: Any = Settings
    parts = path.split(".")
    for part in parts[:-1]:
        model = _model(model.model_fields[part].annotation)
    return model.model_fields[parts[-1]]


def test_every_env_var_of_the_reference_is_read_into_its_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked = 0
    for path, env in gen.setting_paths().items():
        if env is None:
            continue
        field = _field(path)
        kinds = {
            a for a in (field.annotation, *typing.get_args(field.annotation)) if a is not type(None)
        }
        if kinds <= {str, Path, SecretStr, str | None, Path | None, SecretStr | None}:
            # Free text: the value must arrive as given.
            monkeypatch.setenv(env, "https://doc-check.example/v")
            try:
                got: Any = load_settings()
            except ConfigError as err:  # a cross-field rule (a webhook URL needs its secret)
                assert path.rsplit(".", 1)[0] in str(err), (env, str(err))
            else:
                for part in path.split("."):
                    got = getattr(got, part)
                got = got.get_secret_value() if isinstance(got, SecretStr) else got
                assert got in ("https://doc-check.example/v", Path("https://doc-check.example/v"))
        else:
            # Typed: a wrong value must be rejected, which proves the variable is read.
            monkeypatch.setenv(env, "@@not-a-valid-value@@")
            with pytest.raises(ConfigError) as err:
                load_settings()
            assert path.split(".")[0] in str(err.value), (env, str(err.value))
        monkeypatch.delenv(env)
        checked += 1
    assert checked > 150


def _setting_paths() -> list[tuple[str, str]]:
    top = set(Settings.model_fields)
    out = []
    for path in DOC_FILES:
        for span in inline_spans(path):
            shape = re.fullmatch(r"[a-z_]+(\.(?:[a-z_0-9]+|<[a-z_]+>|\*|\[\]))+", span)
            if shape and span.split(".")[0] in top:
                out.append((path.name, span))
    return sorted(set(out))


SETTING_PATHS = _setting_paths()


def test_the_docs_name_settings() -> None:
    assert len(SETTING_PATHS) >= 30


@pytest.mark.parametrize(("where", "path"), SETTING_PATHS, ids=[p for _, p in SETTING_PATHS])
def test_every_settings_path_shown_exists(where: str, path: str) -> None:
    parts = [p for p in re.split(r"\.|(?=\[\])", path) if p]
    problem = resolve(parts)
    assert problem is None, f"{where}: `{path}`: {problem}"


def _yaml_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in ("yaml", "yml")]


@pytest.mark.parametrize("block", _yaml_blocks(), ids=lambda b: f"{b.file.name}:{b.text[:30]}")
def test_every_settings_or_rules_yaml_block_validates(block: Block, tmp_path: Path) -> None:
    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), block.text
    if set(data) & set(Settings.model_fields):
        config = tmp_path / "c.yaml"
        config.write_text(block.text)
        load_settings(config)  # raises ConfigError naming the wrong field
    elif "rules" in data:
        parse_rules(block.text, block.file.name)


def test_relative_links_point_at_files() -> None:
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            file = (path.parent / target.split("#")[0]).resolve()
            assert file.exists(), f"{path.name}: link to missing {target}"


# -- generated references -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(gen.GENERATED))
def test_generated_reference_is_up_to_date(name: str) -> None:
    current = (ROOT / "docs" / name).read_text(encoding="utf-8")
    assert current == gen.GENERATED[name](), f"docs/{name} is stale: run scripts/gen-docs"


def test_configuration_reference_lists_every_setting_with_its_env_var() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    paths = gen.setting_paths()
    for path, env in paths.items():
        assert f"`{path}`" in text
        if env:
            assert env == "WATCHDOG_" + "__".join(p.upper() for p in path.split(".")), path
            assert f"`{env}`" in text
    for name in Settings.model_fields:  # every section is there
        assert any(p == name or p.startswith(name + ".") for p in paths), name
    assert paths["server.port"] == "WATCHDOG_SERVER__PORT"
    assert paths["detectors.loop.repeat"] == "WATCHDOG_DETECTORS__LOOP__REPEAT"


def test_detector_reference_lists_every_rule_with_its_default() -> None:
    from watchdog.registry import known_rules, shipped_context_rules

    text = (ROOT / "docs" / "detectors.md").read_text()
    for info in known_rules():
        assert f"| `{info.detector}.{info.rule}` |" in text, info
    for rule in shipped_context_rules():
        assert f"`rule.{rule.id}`" in text
    assert "| `loop.repeat` |" in text and "warn at 3, pause at 5, kill at 8" in text


def test_schema_reference_matches_the_migrated_database() -> None:
    text = (ROOT / "docs" / "schema.md").read_text()
    for table in ("spans", "steps", "alerts", "verdicts", "verdict_audit", "holds"):
        assert f"## {table}\n" in text
    assert "| `cost_usd` | `DOUBLE` | yes |" in text


def test_the_demo_doc_shows_the_queries_the_demo_prints() -> None:
    from watchdog.demo.report import QUERIES

    text = (ROOT / "docs" / "demo.md").read_text()
    for _, query in QUERIES:
        assert f'"{query}"' in text


def test_the_demo_doc_shows_the_demo_settings() -> None:
    shown = next(
        yaml.safe_load(b.text)
        for b in blocks(ROOT / "docs" / "demo.md")
        if b.lang == "yaml" and "budgets" in b.text
    )
    real = yaml.safe_load(DEMO_CONFIG)
    real.pop("log_level", None)
    assert shown == real


# -- deploy/ ------------------------------------------------------------------------------------


def test_kubernetes_manifest_runs_watchdog_as_a_native_sidecar(tmp_path: Path) -> None:
    docs_ = list(
        yaml.safe_load_all((DEPLOY / "kubernetes" / "agent-with-watchdog.yaml").read_text())
    )
    kinds = {d["kind"]: d for d in docs_}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    sidecar = pod["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"  # the native-sidecar marker
    args = build_parser().parse_args(sidecar["args"])
    assert args.command == "run" and str(args.config) == "/etc/watchdog/watchdog.yaml"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts["/etc/watchdog"] == "config"
    # The settings file it mounts is valid settings.
    config = tmp_path / "watchdog.yaml"
    config.write_text(kinds["ConfigMap"]["data"]["watchdog.yaml"])
    settings = load_settings(config)
    assert settings.server.host == "0.0.0.0"
    # Bound beyond loopback, so the API token must be set, and the agent gets it too.
    assert "WATCHDOG_API_TOKEN" in kinds["Secret"]["stringData"]
    agent_env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert agent_env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://127.0.0.1:4318"
    assert agent_env["WATCHDOG_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "watchdog"
    # Only Slack's two endpoints are exposed.
    paths = [p["path"] for r in kinds["Ingress"]["spec"]["rules"] for p in r["http"]["paths"]]
    assert sorted(paths) == ["/slack/commands", "/slack/interactions"]


def test_systemd_unit_runs_check_config_then_run() -> None:
    unit = (DEPLOY / "systemd" / "watchdog.service").read_text()
    execs = dict(re.findall(r"^(ExecStartPre|ExecStart)=(.+)$", unit, re.M))
    for key in ("ExecStartPre", "ExecStart"):
        argv = shlex.split(execs[key])
        assert argv[0].endswith("/watchdog")
        build_parser().parse_args(argv[1:])
    assert shlex.split(execs["ExecStartPre"])[1] == "check-config"
    assert shlex.split(execs["ExecStart"])[1] == "run"
    assert "KillSignal=SIGTERM" in unit and "StateDirectory=watchdog" in unit


def test_dockerfile_copies_every_package_and_runs_watchdog() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert include is not None
    for pkg in re.findall(r'"(\w+)\*"', include.group(1)):
        assert f"COPY {pkg} ./{pkg}" in text, pkg
    assert 'ENTRYPOINT ["watchdog"]' in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    build_parser().parse_args(yaml.safe_load(cmd.group(1)))
