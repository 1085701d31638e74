from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    ConfigError,
    Settings,
    bcrypt_available,
    bcrypt_check,
    load_settings,
    load_web_config,
    parse_listen,
)
from agent.specs import SpecTable


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    s = load_settings(None, {}, {})
    assert s.listen == "0.0.0.0:10835" and s.listen_address() == ("0.0.0.0", 10835)
    assert s.interval_seconds == 1.0 and s.process_interval_seconds == 5.0 and s.history_seconds == 900
    assert s.device_timeout_intervals == 2.0 and s.health_interval_seconds == 5.0
    assert s.log_level == "info" and s.procfs == "/proc" and s.sysfs == "/sys"
    assert s.web_config_file is None and s.specs == {}


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "gpulse.yaml",
        "interval_seconds: 2\nhistory_seconds: 60\nlisten: ':1111'\nsignals:\n  precision: fp16\n",
    )
    env = {
        "GPULSE_HISTORY_SECONDS": "120",
        "GPULSE_LISTEN": "127.0.0.1:2222",
        "GPULSE_SIGNALS__PRECISION": "fp8",
        "HOME": "/root",
        "GPULSE_CONFIG": "ignored-here",
    }
    s = load_settings(config, env, {"listen": "127.0.0.1:3333", "log_level": None})
    assert s.interval_seconds == 2.0  # file only
    assert s.history_seconds == 120.0  # environment beats file
    assert s.signals.precision == "fp8"  # nested through "__"
    assert s.listen == "127.0.0.1:3333"  # flag beats both; a None flag is "not given"
    assert s.log_level == "info"


@pytest.mark.parametrize(
    ("env", "flags", "fragments"),
    [
        (
            {"GPULSE_INTERVAL_SECONDS": "100"},
            {},
            ["interval_seconds", "less than or equal to 60", "GPULSE_INTERVAL_SECONDS"],
        ),
        ({}, {"interval_seconds": 0.01}, ["interval_seconds", "greater than or equal to 0.1", "flag"]),
        (
            {"GPULSE_HEALTH_INTERVAL_SECONDS": "0"},
            {},
            ["health_interval_seconds", "greater than or equal to 0.1", "GPULSE_HEALTH_INTERVAL_SECONDS"],
        ),
        ({"GPULSE_PROFILNG__ENABLED": "1"}, {}, ["profilng: unknown key", "did you mean profiling"]),
        ({"GPULSE_SIGNALS__PRECISON": "bf16"}, {}, ["signals.precison: unknown key", "signals.precision"]),
        ({"GPULSE_PROFILING__ENABLED": "maybe"}, {}, ["profiling.enabled", "boolean"]),
        ({}, {"listen": "localhost"}, ["listen: expected HOST:PORT"]),
        ({}, {"listen": "127.0.0.1:70000"}, ["listen: port 70000 is out of range"]),
        ({"GPULSE_SPECS__H100-SXM__TDP": "1"}, {}, ["specs.H100-SXM.tdp: unknown key", "tdp_watts"]),
        (
            {"GPULSE_SPECS__H100-SXM__PEAK_FLOPS__BF17": "1"},
            {},
            ["specs.H100-SXM.peak_flops.bf17: invalid key"],
        ),
        ({"GPULSE_SPECS__X__MATCH": "(("}, {}, ["specs.x.match", "not a valid regular expression"]),
        ({"GPULSE_LOG_LEVEL": "loud"}, {}, ["log_level"]),
        ({"GPULSE_SPECS": "{not json"}, {}, ["specs", "GPULSE_SPECS", "not valid JSON"]),
    ],
)
def test_bad_values_name_the_full_key_and_the_source(
    env: dict[str, str], flags: dict[str, object], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env, flags)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(str(tmp_path / "missing.yaml"), {}, {})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "bad.yaml", "a: [1,\n"), {}, {})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "list.yaml", "- 1\n"), {}, {})
    bad = write(tmp_path, "typo.yaml", "attribution:\n  kubelet_sockett: /x\n")
    with pytest.raises(
        ConfigError, match=r"attribution\.kubelet_sockett: unknown key .*from file .*typo\.yaml"
    ):
        load_settings(bad, {}, {})
    assert load_settings(write(tmp_path, "empty.yaml", ""), {}, {}) == Settings()


def test_spec_overrides_reach_the_spec_table() -> None:
    s = load_settings(
        None,
        {
            "GPULSE_SPECS__H100-SXM__PEAK_FLOPS__BF16": "1e15",
            "GPULSE_SPECS": '{"MyGPU": {"match": "My GPU", "peak_clock_mhz": 1000}}',
        },
        {},
    )
    assert s.spec_overrides()["H100-SXM"] == {"peak_flops": {"bf16": 1e15}}
    table = SpecTable(s.spec_overrides())
    h100 = table.by_key("H100-SXM")
    assert h100 is not None and h100.peak_flops["bf16"] == 1e15 and h100.peak_flops["fp8"] > 1e15
    mine = table.for_device("My GPU 9000")
    assert mine is not None and mine.key == "MyGPU" and mine.peak_clock_mhz == 1000


def test_parse_listen_forms() -> None:
    assert parse_listen("127.0.0.1:10835") == ("127.0.0.1", 10835)
    assert parse_listen(":10835") == ("0.0.0.0", 10835)
    assert parse_listen("[::1]:0") == ("::1", 0)


def test_web_config_tls_and_errors(tmp_path: Path) -> None:
    write(tmp_path, "cert.pem", "x")
    write(tmp_path, "key.pem", "x")
    good = write(tmp_path, "web.yaml", "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    web = load_web_config(good)
    assert web.tls and web.cert_file == str(tmp_path / "cert.pem") and web.basic_auth_users == {}
    s = load_settings(None, {"GPULSE_WEB_CONFIG_FILE": good}, {})
    assert s.web_config_file == good
    tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
    cases = {
        "tls_server_config:\n  cert_file: cert.pem\n": "cert_file and key_file must be given together",
        tls.replace("cert.pem", "nope.pem"): "tls_server_config.cert_file: no such file",
        tls + "  cipher_suites: []\n": "tls_server_config.cipher_suites: unsupported key",
        "http_server_config: {}\n": "http_server_config: unsupported key",
        "basic_auth_users:\n  alice: plaintext\n": "basic_auth_users.alice: not a bcrypt hash",
        tls + "  client_auth_type: Maybe\n": "client_auth_type: unknown value",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = write(tmp_path, f"web{i}.yaml", text)
        with pytest.raises(ConfigError, match=message):
            load_web_config(path)
        with pytest.raises(ConfigError, match=message):  # found when the settings load, not at serve time
            load_settings(None, {}, {"web_config_file": path})


@pytest.mark.skipif(not bcrypt_available(), reason="no bcrypt implementation on this machine")
def test_bcrypt_check_against_an_exporter_toolkit_hash(tmp_path: Path) -> None:
    # htpasswd -nbBC 10 "" test | tr -d ':\n'  (the exporter-toolkit documentation's example user)
    hashed = "$2y$10$8TpGNPHzCN0szEoTiJ3jOucgQI4afrENI7d32EKH9mjGwThz2C5ca"
    assert bcrypt_check("test", hashed)
    assert not bcrypt_check("wrong", hashed)
    path = write(tmp_path, "web.yaml", f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    assert load_web_config(path).basic_auth_users == {"prometheus": hashed}
