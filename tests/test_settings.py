"""Settings precedence and validation, through `load_settings` and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from watchdog.errors import ConfigError
from watchdog.settings import load_settings


def test_embedded_defaults() -> None:
    s = load_settings()
    assert (s.server.host, s.server.port) == ("127.0.0.1", 4318)
    assert s.storage.data_dir == Path("watchdog-data")
    assert s.server.max_body_bytes == 64 * 1024 * 1024
    assert s.api_token is None


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text("server:\n  port: 5000\n  max_body_bytes: 1234\nsql:\n  max_rows: 7\n")
    assert load_settings(cfg).server.port == 5000
    monkeypatch.setenv("WATCHDOG_SERVER__PORT", "6000")
    monkeypatch.setenv("WATCHDOG_API_TOKEN", "zq-secret-91")
    s = load_settings(cfg)
    assert s.server.port == 6000
    assert s.api_token is not None and s.api_token.get_secret_value() == "zq-secret-91"
    s = load_settings(cfg, server={"port": 7000})
    # A flag replaces one field, not the whole section from the file.
    assert (s.server.port, s.server.max_body_bytes, s.sql.max_rows) == (7000, 1234, 7)
    assert "zq-secret-91" not in repr(s)


@pytest.mark.parametrize(
    ("yaml_text", "path"),
    [
        ("server:\n  port: 99999\n", "server.port"),
        ("server:\n  prot: 1\n", "server.prot"),
        ("ingest:\n  max_queued_spans: 10\n  max_batch_spans: 20\n", "ingest.max_batch_spans"),
        ("budgets:\n  warn_fractions: [0.5, 1.5]\n", "budgets.warn_fractions"),
        ("unknown_section: {}\n", "unknown_section"),
        ("storage:\n  checkpoint_threshold: lots\n", "storage.checkpoint_threshold"),
    ],
)
def test_bad_settings_name_their_path(tmp_path: Path, yaml_text: str, path: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert path in str(err.value)


def test_check_config_cli(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
    good = tmp_path / "good.yaml"
    good.write_text("server:\n  port: 4400\n")
    out = subprocess.run(
        [sys.executable, "-m", "watchdog", "check-config", "--config", str(good)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "config ok" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: -1\n")
    out = subprocess.run(
        [sys.executable, "-m", "watchdog", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert "server.port" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "watchdog", "check-config", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert "not found" in out.stderr
