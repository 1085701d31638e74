from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import cli, cli_serve

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_the_core_commands(capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "status" in out


def test_no_command_prints_help_and_exits_2(capsys: Any) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["serve", "--interval", "100"], {}, "interval_seconds: Input should be less than or equal to 60"),
        (["serve", "--listen", "nowhere"], {}, "listen: expected HOST:PORT"),
        (["serve"], {"GPULSE_SIGNALS__PRECISON": "bf16"}, "signals.precison: unknown key"),
        (["serve", "--config", "/nonexistent/gpulse.yaml"], {}, "no such file"),
    ],
)
def test_bad_configuration_exits_2_naming_the_key(
    argv: list[str], env: dict[str, str], fragment: str, capsys: Any, monkeypatch: Any
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpulse: configuration error: ") and fragment in err


def test_config_file_from_the_environment(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "gpulse.yaml"
    path.write_text("history_seconds: 30\n")
    monkeypatch.setenv("GPULSE_CONFIG", str(path))
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--interval", "0.5"])
    settings = cli_serve.settings_from_args(args)
    assert settings.history_seconds == 30 and settings.interval_seconds == 0.5


def test_serve_hands_the_settings_and_real_backends_to_the_runtime(monkeypatch: Any) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(settings: Any, gpu: Any, host: Any, clock: Any) -> int:
        seen.update(settings=settings, gpu=gpu, host=host)
        return 0

    monkeypatch.setattr(cli_serve, "serve", fake_serve)
    assert cli.main(["serve", "--listen", "127.0.0.1:0", "--log-level", "warning"]) == 0
    assert seen["settings"].listen == "127.0.0.1:0" and seen["settings"].log_level == "warning"
    assert type(seen["gpu"]).__name__ == "NvmlBackend"
    assert type(seen["host"]).__name__ == "HostBackend"


def test_python_dash_m_agent_is_the_gpulse_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--interval", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "interval_seconds" in proc.stderr
