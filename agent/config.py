"""Settings: one typed model, filled from a YAML file, the environment and flags.

Precedence, lowest first: the YAML file, then ``GPULSE_*`` environment variables
(``__`` separates nesting levels: ``GPULSE_PROFILING__ENABLED=true`` sets
``profiling.enabled``), then command-line flags. Every section forbids unknown keys,
so a typo fails loudly: ``load_settings`` raises ``ConfigError`` whose message names
the dotted key, the problem and where the value came from; the CLI prints it and
exits with status 2.

The web-config file (TLS, basic auth) follows the Prometheus exporter-toolkit format
so that the same file works for node_exporter and gpulse.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.attribution.settings import AttributionSettings
from agent.profiling.settings import ProfilingSettings
from agent.signals.settings import SignalSettings
from agent.specs import PRECISIONS, SPECS

ENV_PREFIX = "GPULSE_"
ENV_CONFIG_FILE = "GPULSE_CONFIG"  # names the YAML file; not a setting itself
DEFAULT_PORT = 10835


class ConfigError(Exception):
    """A configuration problem; the message names the key and is meant for the user."""


class SpecOverride(BaseModel):
    """Per-model overrides of the built-in spec table (``agent.specs``); every field optional."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    match: str | None = None  # regular expression matched against the NVML device name
    architecture: str | None = None
    compute_capability: str | None = None
    sms: int | None = Field(default=None, ge=0)
    max_sm_clock_mhz: float | None = Field(default=None, gt=0)
    peak_clock_mhz: float | None = Field(default=None, gt=0)
    max_memory_clock_mhz: float | None = Field(default=None, gt=0)
    memory_bytes: int | None = Field(default=None, ge=0)
    memory_bandwidth_bytes_per_second: float | None = Field(default=None, gt=0)
    tdp_watts: float | None = Field(default=None, gt=0)
    min_power_limit_watts: float | None = Field(default=None, ge=0)
    peak_flops: dict[Literal[PRECISIONS], float] | None = None  # type: ignore[valid-type]
    has_gpm: bool | None = None
    has_nvlink: bool | None = None
    has_ecc: bool | None = None
    has_row_remapping: bool | None = None
    pcie_generation: int | None = Field(default=None, ge=1)

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = Field(default=f"0.0.0.0:{DEFAULT_PORT}", description="HOST:PORT the HTTP server binds")
    interval_seconds: float = Field(default=1.0, ge=0.1, le=60, description="sampling interval")
    process_interval_seconds: float = Field(
        default=5.0, ge=0.1, le=3600, description="compute-process list poll"
    )
    health_interval_seconds: float = Field(
        default=5.0, ge=0.1, le=3600, description="ECC, retired-page, remapped-row and PCIe-replay counters"
    )
    history_seconds: float = Field(default=900.0, ge=1, le=86400, description="ring-buffer length per GPU")
    device_timeout_intervals: float = Field(
        default=2.0,
        ge=1.0,
        le=100,
        description="a call outstanding longer than this many intervals = unresponsive",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    procfs: str = Field(default="/proc", description="procfs root (point at a fixture tree or /host/proc)")
    sysfs: str = Field(default="/sys", description="sysfs root")
    cgroupfs: str = Field(default="/sys/fs/cgroup", description="cgroup filesystem root")
    web_config_file: str | None = Field(
        default=None, description="exporter-toolkit web config: TLS and basic auth"
    )
    specs: dict[str, SpecOverride] = Field(default_factory=dict, description="per-model spec overrides")
    signals: SignalSettings = Field(default_factory=SignalSettings)
    profiling: ProfilingSettings = Field(default_factory=ProfilingSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def spec_overrides(self) -> dict[str, dict[str, object]]:
        """The ``specs`` section in the shape ``SpecTable`` takes (only the fields the user set)."""
        return {key: spec.model_dump(exclude_none=True) for key, spec in self.specs.items()}


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:10835`` for IPv6, ``:10835`` for all interfaces) -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


# --- loading -------------------------------------------------------------------------------------


def load_settings(config_file: str | None, environ: Mapping[str, str], flags: dict[str, Any]) -> Settings:
    """File < environment < flags. ``flags`` maps dotted keys to values; a None value = not given."""
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    if config_file:
        _merge(merged, _read_yaml(config_file), (), f"file {config_file}", sources)
    for path, value, source in _from_environ(environ):
        _merge(merged, _nest(path, value), (), source, sources)
    _merge(merged, _unflatten({k: v for k, v in flags.items() if v is not None}), (), "flag", sources)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, merged, sources)) from None
    if settings.web_config_file:
        load_web_config(settings.web_config_file)  # fail now, not when the server starts
    return settings


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def _from_environ(environ: Mapping[str, str]) -> list[tuple[tuple[str, ...], Any, str]]:
    """``GPULSE_A__B=v`` -> (("a", "b"), v, source); a value starting with ``{`` or ``[`` is read as JSON.

    Shorter paths come first, so ``GPULSE_SPECS='{...}'`` is applied before ``GPULSE_SPECS__X__Y``.
    """
    out: list[tuple[tuple[str, ...], Any, str]] = []
    spec_keys = {key.lower(): key for key in SPECS}
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if any(not part for part in path):
            raise ConfigError(f"environment variable {name}: empty key segment")
        if path[0] == "specs" and len(path) > 1:
            path[1] = spec_keys.get(path[1], path[1])  # spec keys are case-sensitive ("H100-SXM")
        raw = environ[name]
        value: Any = raw
        if raw.lstrip().startswith(("{", "[")):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                key = ".".join(path)
                raise ConfigError(f"{key}: environment variable {name} is not valid JSON: {exc}") from None
        out.append((tuple(path), value, f"environment variable {name}"))
    out.sort(key=lambda item: (len(item[0]), item[0]))
    return out


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for part in reversed(path):
        value = {part: value}
    return dict(value)


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(
    dst: dict[str, Any],
    src: Mapping[str, Any],
    prefix: tuple[str, ...],
    source: str,
    sources: dict[tuple[str, ...], str],
) -> None:
    """Deep-merge ``src`` into ``dst``, recording which source set each leaf (for error messages)."""
    for key, value in src.items():
        path = (*prefix, str(key))
        if isinstance(value, dict):
            if not isinstance(dst.get(key), dict):
                dst[key] = {}
            sources.setdefault(path, source)
            _merge(dst[key], value, path, source, sources)
            continue
        dst[key] = value
        sources[path] = source


def _describe(exc: ValidationError, data: dict[str, Any], sources: dict[tuple[str, ...], str]) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        bad_key = bool(loc) and loc[-1] == "[key]"  # a dict key failed its own validation
        if bad_key:
            loc = loc[:-1]
        key = ".".join(loc) or "(top level)"
        where = _source_of(loc, sources)
        if error["type"] == "extra_forbidden":
            message = "unknown key"
            allowed = _allowed_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], allowed, n=1) if loc else []
            if close:
                message += f" (did you mean {'.'.join((*loc[:-1], close[0]))}?)"
            elif allowed:
                message += f" (known keys here: {', '.join(sorted(allowed))})"
        elif error["type"] == "value_error":
            message = error["msg"].removeprefix("Value error, ")
        else:
            message = error["msg"]
            if "input" in error and not isinstance(error["input"], dict):
                message += f", got {error['input']!r}"
        if bad_key:
            message = f"invalid key: {message}"
        suffix = f" (from {where})" if where else ""
        # A model validator may already name the full key ("profiling.token: required ...").
        lines.append(f"{message}{suffix}" if message.startswith(f"{key}.") else f"{key}: {message}{suffix}")
    return "; ".join(lines)


def _source_of(loc: tuple[str, ...], sources: dict[tuple[str, ...], str]) -> str:
    for n in range(len(loc), 0, -1):
        found = sources.get(loc[:n])
        if found:
            return found
    return ""


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    """The keys the section at ``loc`` accepts, for "did you mean" hints."""
    model: type[BaseModel] = Settings
    parts = list(loc)
    while parts:
        info = model.model_fields.get(parts.pop(0))
        if info is None:
            return []
        annotation = info.annotation
        if get_origin(annotation) is dict:  # specs.<KEY>: step over the user's key
            if not parts:
                return []
            parts.pop(0)
            annotation = get_args(annotation)[1]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# --- web config (exporter-toolkit format) ---------------------------------------------------------

_CLIENT_AUTH = {
    "NoClientCert": "none",
    "RequestClientCert": "optional",
    "RequireAnyClientCert": "required",
    "VerifyClientCertIfGiven": "optional",
    "RequireAndVerifyClientCert": "required",
}


@dataclass(frozen=True)
class WebConfig:
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth: str = "none"  # none | optional | required
    basic_auth_users: dict[str, str] = field(default_factory=dict)  # user -> bcrypt hash

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def load_web_config(path: str) -> WebConfig:
    """Parse an exporter-toolkit web-config file; a ConfigError names the key that is wrong."""
    data = _read_yaml(path)
    where = f"web_config_file {path}"
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ConfigError(
            f"{where}: {sorted(unknown)[0]}: unsupported key (supported: tls_server_config, basic_auth_users)"
        )
    tls = data.get("tls_server_config") or {}
    if not isinstance(tls, dict):
        raise ConfigError(f"{where}: tls_server_config: must be a mapping")
    unknown = set(tls) - {"cert_file", "key_file", "client_ca_file", "client_auth_type"}
    if unknown:
        raise ConfigError(f"{where}: tls_server_config.{sorted(unknown)[0]}: unsupported key")
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if bool(cert) != bool(key):
        raise ConfigError(f"{where}: tls_server_config: cert_file and key_file must be given together")
    base = os.path.dirname(os.path.abspath(path))  # relative paths are relative to the web-config file
    resolved: dict[str, str | None] = {}
    for name in ("cert_file", "key_file", "client_ca_file"):
        value = tls.get(name)
        if value:
            full = os.path.join(base, str(value))
            if not os.path.isfile(full):
                raise ConfigError(f"{where}: tls_server_config.{name}: no such file {value}")
            resolved[name] = full
        else:
            resolved[name] = None
    auth_type = str(tls.get("client_auth_type", "NoClientCert"))
    if auth_type not in _CLIENT_AUTH:
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type: unknown value {auth_type!r}"
            f" (one of {', '.join(_CLIENT_AUTH)})"
        )
    client_auth = _CLIENT_AUTH[auth_type]
    if client_auth != "none" and not resolved["client_ca_file"]:
        raise ConfigError(
            f"{where}: tls_server_config.client_ca_file: needed for client_auth_type {auth_type}"
        )
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
        raise ConfigError(f"{where}: basic_auth_users: must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{where}: basic_auth_users.{user}: not a bcrypt hash (expected $2y$...)")
    if users and not bcrypt_available():
        raise ConfigError(
            f"{where}: basic_auth_users: needs bcrypt support (pip install bcrypt);"
            " TLS alone works without it"
        )
    return WebConfig(
        cert_file=resolved["cert_file"],
        key_file=resolved["key_file"],
        client_ca_file=resolved["client_ca_file"],
        client_auth=client_auth,
        basic_auth_users={str(k): v for k, v in users.items()},
    )


def bcrypt_check(password: str, hashed: str) -> bool:
    """True when ``password`` matches the bcrypt ``hashed`` (the bcrypt package, else libc's crypt)."""
    try:
        import bcrypt  # optional dependency

        return bool(bcrypt.checkpw(password.encode(), hashed.encode()))
    except ImportError:
        pass
    crypt = _crypt_module()
    if crypt is None:
        return False
    result = crypt.crypt(password, hashed)
    return bool(result) and result == hashed


def bcrypt_available() -> bool:
    try:
        import bcrypt  # noqa: F401

        return True
    except ImportError:
        pass
    crypt = _crypt_module()
    if crypt is None:
        return False
    probe = "$2b$04$abcdefghijklmnopqrstuu"
    result = crypt.crypt("x", probe)
    return bool(result) and result.startswith("$2b$04$")


def _crypt_module() -> Any:
    """The stdlib ``crypt`` module where it exists (removed in Python 3.13); libxcrypt knows bcrypt."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    return crypt
