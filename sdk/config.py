"""Where the CLI and the client find the platform: ``~/.chutes/config.ini``, the environment, then flags.

Precedence, lowest first: the config file (``$CHUTES_CONFIG`` or ``~/.chutes/config.ini``), the environment
(``CHUTES_SCHEDULER_URL``, formerly ``CHUTES_API_URL``, still read with a warning; ``CHUTES_GATEWAY_URL``,
``CHUTES_API_KEY``), then explicit values (``--api-url``,
``--api-key``). The file holds an API key, so it is written readable by its owner only.

    [api]
    url = http://127.0.0.1:8100
    gateway_url = http://127.0.0.1:8200
    key = cnk_...
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

from chutes.core.errors import HintedError
from chutes.core.settings import Setting
from chutes.core.settings import Settings as Declared

ENV_CONFIG = "CHUTES_CONFIG"
ENV_API_URL = "CHUTES_SCHEDULER_URL"  # the name every process uses for this URL
OLD_ENV_API_URL = "CHUTES_API_URL"
ENV_GATEWAY_URL = "CHUTES_GATEWAY_URL"
ENV_API_KEY = "CHUTES_API_KEY"
ENV_DEBUG = "CHUTES_DEBUG"
SECTION = "api"
#: What the environment may set (the config file and the flags are read by :func:`load` and the commands).
SETTINGS = Declared(
    "chutes",
    [
        Setting("api_url", "the scheduler's URL", env=ENV_API_URL, flag="--api-url", old_env=(OLD_ENV_API_URL,)),
        Setting("api_key", "your API key", env=ENV_API_KEY, flag="--api-key"),
        Setting("gateway_url", "the gateway's URL", env=ENV_GATEWAY_URL, flag="--gateway-url"),
        Setting("config", "the config file", env=ENV_CONFIG, shown_default="`~/.chutes/config.ini`"),
        Setting("debug", "tracebacks instead of one-line errors (`1`)", env=ENV_DEBUG, flag="--debug"),
    ],
)


class ConfigError(HintedError, ValueError):
    """A config file that cannot be read, or a setting that is missing."""


@dataclass(frozen=True)
class Settings:
    """The resolved settings; any of them may be missing until something needs it."""

    api_url: str | None = None
    gateway_url: str | None = None
    api_key: str | None = None
    path: Path | None = None

    def require_api(self) -> tuple[str, str]:
        """The scheduler URL and API key, or a ConfigError that says how to provide them."""
        if not self.api_url:
            raise ConfigError(
                "no API URL configured",
                hint=f"start a local stack with `chutes dev`, or pass --api-url / set {ENV_API_URL}",
            )
        if not self.api_key:
            raise ConfigError(
                "no API key configured",
                hint=f"pass --api-key, set {ENV_API_KEY}, or run `chutes dev` which writes one to {self.path}",
            )
        return self.api_url, self.api_key

    def require_gateway(self) -> str:
        """The gateway URL, or a ConfigError that says how to provide it."""
        if not self.gateway_url:
            raise ConfigError(
                "no gateway URL configured",
                hint=f"pass --gateway-url, set {ENV_GATEWAY_URL}, or add gateway_url to [{SECTION}] in {self.path}",
            )
        return self.gateway_url


def config_path() -> Path:
    """``$CHUTES_CONFIG`` if set, else ``~/.chutes/config.ini``."""
    override = SETTINGS.from_env(os.environ, names=["config"])[0].get("config")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".chutes" / "config.ini"


def read_file(path: Path) -> Settings:
    """Settings from one config file; a missing file gives empty settings."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        return Settings(path=path)
    except (OSError, configparser.Error) as exc:
        hint = f"fix or delete the file (or point {ENV_CONFIG} elsewhere)"
        raise ConfigError(f"cannot read {path}: {exc}", hint=hint) from None
    section = parser[SECTION] if parser.has_section(SECTION) else {}
    return Settings(
        api_url=_clean(section.get("url")),
        gateway_url=_clean(section.get("gateway_url")),
        api_key=_clean(section.get("key")),
        path=path,
    )


def load(
    api_url: str | None = None,
    api_key: str | None = None,
    gateway_url: str | None = None,
    path: Path | None = None,
) -> Settings:
    """Resolve settings: file, then environment, then the explicit arguments."""
    path = path or config_path()
    file = read_file(path)
    env = SETTINGS.from_env(os.environ, names=["api_url", "api_key", "gateway_url"])[0]
    return Settings(
        api_url=_url(api_url or env.get("api_url") or file.api_url),
        gateway_url=_url(gateway_url or env.get("gateway_url") or file.gateway_url),
        api_key=_clean(api_key or env.get("api_key") or file.api_key),
        path=path,
    )


def save(settings: Settings, path: Path | None = None) -> Path:
    """Write the settings to ``path`` (default: the config path), readable by the owner only."""
    path = path or settings.path or config_path()
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error:
            parser = configparser.ConfigParser(interpolation=None)
    if not parser.has_section(SECTION):
        parser.add_section(SECTION)
    for key, value in (("url", settings.api_url), ("gateway_url", settings.gateway_url), ("key", settings.api_key)):
        if value:
            parser.set(SECTION, key, value)
        elif parser.has_option(SECTION, key):
            parser.remove_option(SECTION, key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        parser.write(handle)
    os.replace(tmp, path)
    return path


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _url(value: str | None) -> str | None:
    value = _clean(value)
    return value.rstrip("/") if value else None
