"""Settings: command-line flag > environment > TOML file > default (docs/reference.md, Configuration).

The TOML file is `--config PATH`, else `$DELIVERY_SYNC_CONFIG`, else
`./config.toml` when it exists. Environment names are `DELIVERY_SYNC_` + key,
with `__` between section and key. Unknown keys and wrong types are a
`ConfigError` naming the key.

A ./config.toml found only because it is in the current folder is refused when
another user owns it or others may write it: whoever writes it chooses where the
token is sent. There is no default `source.url`, so no token goes anywhere unasked.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "DELIVERY_SYNC_"
CONFIG_ENV = "DELIVERY_SYNC_CONFIG"
DEFAULT_CONFIG_FILE = Path("config.toml")


class PostgresURL:
    """A PostgreSQL replica, `postgresql://user[:password]@host[:port]/dbname[?options]`.

    Printed (str, repr, f-strings) without its password, like `source.url`: only `dsn`, handed
    to the driver, carries it.
    """

    SCHEMES = ("postgresql://", "postgres://")

    # Query parameters libpq reads a secret from (`?password=...` is as good as `user:password@`).
    SECRET_PARAMETERS = ("password", "sslpassword")

    def __init__(self, dsn: str):
        if not dsn.lower().startswith(self.SCHEMES):
            raise ValueError("a PostgreSQL URL starts with postgresql:// (two slashes): postgresql://user@host/dbname")
        parts = urlsplit(dsn)
        if parts.netloc.count("@") > 1:
            # libpq and Python split such a URL at different `@`s: the driver would take part of the
            # password for the host, and print it in its error.
            raise ValueError("the user or password of a postgresql:// URL holds an '@': write it as %40")
        if "@" in parts.path:
            # A '/' in the password ends the host part for both parsers: what precedes it reads as a
            # host, the rest as the database, and the password would be shown as part of either.
            raise ValueError("the user or password of a postgresql:// URL holds a '/': write it as %2F")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("the port of a postgresql:// URL must be a number from 1 to 65535") from None
        if not parts.path.strip("/"):
            raise ValueError("a postgresql:// URL must name a database: postgresql://user@host/dbname")
        self.dsn = dsn
        secrets = []
        shown = parts.netloc.rsplit("@", 1)
        if len(shown) == 2 and ":" in shown[0]:
            secrets.append(shown[0].split(":", 1)[1])
            parts = parts._replace(netloc=f"{shown[0].split(':', 1)[0]}:[redacted]@{shown[1]}")
        query = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in self.SECRET_PARAMETERS:
                secrets.append(value)
                value = "[redacted]"
            else:
                value = quote(value, safe="")
            query.append(f"{quote(name, safe='')}={value}")
        if query:
            parts = parts._replace(query="&".join(query))
        # Each secret as written and as decoded: a driver's message may quote either.
        self.secrets = sorted({form for secret in secrets if secret for form in (secret, unquote(secret))}, key=len, reverse=True)
        shown = urlunsplit(parts)
        # urlunsplit drops the `//` of an empty host (postgresql:///db?host=...): a pasted hint would then be a path.
        self.shown = shown if "://" in shown else shown.replace(":", "://", 1)

    def without_secrets(self, text: str) -> str:
        """`text` (e.g. a driver's message) with every password this URL holds replaced by `[redacted]`."""
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    @classmethod
    def matches(cls, value: object) -> bool:
        """Whether `value` is written as a PostgreSQL URL (one with a single slash too, which is then
        refused as a URL, not taken for a file named `postgresql:`)."""
        return isinstance(value, str) and value.lower().startswith(tuple(scheme.rstrip("/") for scheme in cls.SCHEMES))

    def __str__(self) -> str:
        return self.shown

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(self.shown, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PostgresURL) and other.dsn == self.dsn

    def __hash__(self) -> int:
        return hash(self.dsn)


# The start of a libpq connection string (`host=... dbname=...`), which `database` does not take.
_LIBPQ_PAIRS = re.compile(r"(?i)(?:^|\s)(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|sslcert|sslkey|sslrootcert|"
                         r"options|connect_timeout|application_name|target_session_attrs|channel_binding|gssencmode)\s*=")

HOUR = 3600
CENTURY_DAYS = 36_525


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSettings(_Section):
    url: str | None = None  # no default: a token is sent only where someone said to
    token: SecretStr = SecretStr("")
    # Every number bounded and finite: past these, timers and buffers overflow mid-run (a crash
    # cron would see every night, with no run recorded) instead of one line naming the key.
    timeout: float = Field(30, gt=0, le=HOUR, allow_inf_nan=False)
    max_retries: NonNegativeInt = Field(5, le=100)
    concurrency: PositiveInt = Field(4, le=100)
    min_interval: float = Field(0.1, ge=0, le=HOUR, allow_inf_nan=False)
    timezone: str = "Asia/Makassar"
    batch: Literal["auto", "always", "never"] = "auto"
    batch_days: PositiveInt = Field(31, le=CENTURY_DAYS)
    max_consecutive_failures: PositiveInt = 10
    max_answer_mb: float = Field(256, gt=0, le=65_536, allow_inf_nan=False)  # the most one answer may decode to

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value == "demo":
            return value
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError("must be an http:// or https:// URL, or 'demo'")
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or parts.netloc.endswith(":") or port == 0 or port == -1:
            raise ValueError("must name a host, and a port from 1 to 65535 if any")
        return value

    @field_validator("token")
    @classmethod
    def _header_safe(cls, value: SecretStr) -> SecretStr:
        # Sent in a header: a line break would end it early (or add a header of its own), and
        # non-ASCII bytes are not the same token to every server. Refused here, never sent.
        if not all(" " <= char <= "~" for char in value.get_secret_value()):
            raise ValueError("must be printable ASCII: no line break, tab, control or non-ASCII character")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Asia/Makassar')") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The remote's calendar as a ZoneInfo."""
        return ZoneInfo(self.timezone)

    def today(self) -> date:
        """Today on the remote's calendar, never the machine's: what `--days-back` and `--days` end on."""
        return datetime.now(self.tz).date()


class SyncSettings(_Section):
    days_back: PositiveInt = Field(365, le=CENTURY_DAYS)
    lookback_days: NonNegativeInt = Field(3, le=CENTURY_DAYS)
    deadline_minutes: float = Field(0, ge=0, le=7 * 24 * 60, allow_inf_nan=False)  # 0 = no deadline


class CollectSettings(_Section):
    timeout: float = Field(900, gt=0, le=24 * HOUR, allow_inf_nan=False)


class StatusSettings(_Section):
    # At most 100 years: beyond, date arithmetic overflows.
    stale_after_hours: float = Field(26, gt=0, le=876_000, allow_inf_nan=False)


class _TomlSource(TomlConfigSettingsSource):
    """TOML source that resolves a relative `database` against the file's folder."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        path = self.toml_file_path
        database = data.get("database")
        if (isinstance(database, str) and database.strip() and isinstance(path, Path) and not PostgresURL.matches(database)
                and not _LIBPQ_PAIRS.search(database)):
            data["database"] = str(path.parent / Path(database).expanduser())  # no-op when absolute
        return data


class Settings(BaseSettings):
    """Every configuration key (docs/reference.md, Configuration)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    # A SQLite file, or a PostgreSQL server as `postgresql://...` (a PostgresURL).
    database: Path = Path("delivery_stats.db")
    _config_file: Path | None = PrivateAttr(default=None)  # the file these settings were read from, if any

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from (None: defaults and environment only)."""
        return self._config_file

    @field_validator("database", mode="wrap")
    @classmethod
    def _home(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Path | PostgresURL:
        if isinstance(value, PostgresURL):
            return value
        if PostgresURL.matches(value):
            return PostgresURL(value)
        if isinstance(value, str) and not value.strip():  # else "" is the current folder, "not a replica file"
            raise ValueError("is empty: set it to a file path or a postgresql:// URL")
        if isinstance(value, str) and _LIBPQ_PAIRS.search(value):
            # Else a file named after the string, password and all, would be created and shown.
            raise ValueError("key=value connection strings are not read: write a URL, postgresql://user@host/dbname "
                             "(a file whose name starts so: ./name)")
        return handler(value).expanduser()
    source: SourceSettings = Field(default_factory=SourceSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    collect: CollectSettings = Field(default_factory=CollectSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) beat the environment, which beats the file.
        return (init_settings, env_settings, _TomlSource(settings_cls))


def find_config_file(explicit: Path | None) -> Path | None:
    """The TOML file to read: `--config`, else `$DELIVERY_SYNC_CONFIG`, else ./config.toml."""
    if explicit is not None:
        chosen, origin = explicit, "--config"
    elif os.environ.get(CONFIG_ENV):
        chosen, origin = Path(os.environ[CONFIG_ENV]), CONFIG_ENV
    elif DEFAULT_CONFIG_FILE.is_file():
        _check_implicit(DEFAULT_CONFIG_FILE)
        return DEFAULT_CONFIG_FILE.resolve()
    elif DEFAULT_CONFIG_FILE.exists() or DEFAULT_CONFIG_FILE.is_symlink():  # a folder, a FIFO, a dangling link: never skipped in silence
        raise ConfigError(f"./{DEFAULT_CONFIG_FILE} is not a file", hint="remove it, or name the config with --config")
    else:
        return None
    chosen = chosen.expanduser()
    if not chosen.is_file():
        what = "is not a file" if chosen.exists() or str(chosen) in ("", ".") else "does not exist"
        raise ConfigError(f"config file {chosen} (from {origin}) {what}")
    return chosen.resolve()


def _check_implicit(path: Path) -> None:
    """Refuse a ./config.toml nobody named that another user owns or others may write: on a shared
    machine it may be someone else's, pointing source.url (and so the token) at their server."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"./{path} is owned by another user (uid {info.st_uid}): refused, it was only found in the current folder",
            hint="pass it with --config if you trust it",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"./{path} may be written by other users (mode {stat.S_IMODE(info.st_mode):04o}): refused, "
            "whoever writes it chooses where the token is sent",
            hint=f"chmod go-w {path}, or pass it with --config",
        )


def _warn_if_secrets_readable(path: Path) -> None:
    """One warning when the file holds source.token or a database password and users other than
    its owner may read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        with path.open("rb") as file:
            data = tomllib.load(file)
        token = data.get("source", {}).get("token")
        database = data.get("database")
        password = PostgresURL.matches(database) and bool(PostgresURL(database).secrets)
    except (OSError, ValueError, AttributeError):
        return  # the settings read it already: any problem was reported there
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return
    if token:
        log.warning("%s holds source.token and other users can read it (mode %04o): chmod 600 it, "
                    "or set DELIVERY_SYNC_SOURCE__TOKEN instead", path, mode)
    if password:
        log.warning("%s holds the database password and other users can read it (mode %04o): chmod 600 it, "
                    "or set DELIVERY_SYNC_DATABASE instead", path, mode)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from the file, the environment and flag `overrides`.

    `overrides` uses the nested shape of the file, e.g. `source={"url": ...}`;
    None values are dropped so an absent flag never hides a configured value.
    """
    path = find_config_file(config_file)
    _check_environment()
    flags = _drop_none(overrides)
    settings_cls = Settings
    if path is not None:
        settings_cls = type(  # type: ignore[assignment]
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
        )
    try:
        settings = settings_cls(**flags)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, flags)) from None
    except (OSError, ValueError) as exc:  # unreadable file or TOML syntax error
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    settings._config_file = path
    if path is not None:
        _warn_if_secrets_readable(path)
    return settings


def _check_environment() -> None:
    """An unknown `DELIVERY_SYNC_*` variable is an unknown key (pydantic-settings would ignore it silently)."""
    known = {CONFIG_ENV, *(ENV_PREFIX + key.upper().replace(".", "__") for key in _config_keys())}
    for variable in sorted(os.environ):
        if variable.upper().startswith(ENV_PREFIX) and variable.upper() not in known:
            key = variable[len(ENV_PREFIX):].lower().replace("__", ".")
            raise ConfigError(f"invalid config: {key}: unknown key{_did_you_mean(key)} [{variable}]")


def _given(flags: dict[str, Any], loc: tuple) -> bool:
    for part in loc:
        if not isinstance(flags, dict) or part not in flags:
            return False
        flags = flags[part]
    return True


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if not value:
                continue
        if value is not None:
            cleaned[key] = value
    return cleaned


# The flags that set a key: a bad flag value is blamed on the flag, not on the file or environment.
FLAG_KEYS = {"database": "--db", "source.url": "--source", "sync.deadline_minutes": "--deadline", "collect.timeout": "--timeout"}


# `password=x` in a URL's query, and `password = 'a b'` in a libpq key=value string (quoted, with spaces).
_SECRET_PARAMETER = re.compile(rf"(?i)\b((?:{'|'.join(PostgresURL.SECRET_PARAMETERS)})\s*=\s*)('(?:[^'\\]|\\.)*'?|[^&#\s]*)")


def _without_password(value: Any) -> Any:
    """A URL as an error may show it: anything before the last `@` but the scheme (a user and password,
    even in a URL too malformed to parse) and any `password=` parameter replaced by `[redacted]`."""
    if not isinstance(value, str):
        return value
    # Parameters first: a password may hold an `@` (`?password=a@b`), which the user part's rule would cut in two.
    value = _SECRET_PARAMETER.sub(r"\1[redacted]", value)
    return re.sub(r"^([A-Za-z][\w+.-]*:/*)?.*@", lambda m: f"{m.group(1) or ''}[redacted]@", value, flags=re.DOTALL)


def shown_database(value: str) -> str:
    """A `database` value (a path, or a PostgreSQL URL even one too malformed to use) as it may be
    printed: a URL without its password."""
    if not PostgresURL.matches(value):
        return _SECRET_PARAMETER.sub(r"\1[redacted]", value)  # a path never holds one; a refused key=value string may
    try:
        return str(PostgresURL(value))
    except ValueError:
        return _without_password(value)


def _did_you_mean(key: str) -> str:
    """`; did you mean source.timeout?` for a misspelt key, or a key written outside its section
    (`url` for `source.url`); "" when nothing is close."""
    import difflib

    every = _config_keys()
    keys = [k for k in every if not any(other.startswith(f"{k}.") for other in every)]  # a section is not a value to set
    leaf = key.rsplit(".", 1)[-1]
    placed = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != key]
    close = placed or difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _config_keys() -> list[str]:
    """Every key a config may set, dotted: `database`, `source`, `source.url`, ... (the environment's
    names are these, upper case, `__` for the dot)."""
    keys = []
    for name, field in Settings.model_fields.items():
        keys.append(name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):  # a section
            keys.extend(f"{name}.{key}" for key in field.annotation.model_fields)
    return keys


def _describe(exc: ValidationError, path: Path | None, flags: dict[str, Any]) -> str:
    """One line naming the first bad key, where it may come from, and why."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    # A URL may carry a password: source.url, or database as postgresql://user:password@...
    shown = _without_password(error.get("input")) if key in ("source.url", "database") else error.get("input")
    if key in FLAG_KEYS and _given(flags, error["loc"]):
        return f"{FLAG_KEYS[key]}: {error['msg'].removeprefix('Value error, ')} (got {shown!r})"
    env = ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper()
    # The environment beats the file: a variable that is set is where the value came from.
    where = env if env in os.environ or not path else f"{path} or {env}"
    if error["type"] == "extra_forbidden":
        reason, where = "unknown key" + _did_you_mean(key), str(path) if path else "flags"
    else:
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "path_type":  # pydantic's words name a Python class: "not a valid path for <class ...>"
            reason = "should be a file path or a postgresql:// URL, as a quoted string" if key == "database" else "should be a path"
        if "input" in error and not isinstance(error["input"], (dict, SecretStr)) and key != "source.token":
            reason += f" (got {shown!r})"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid config: {key}: {reason} [{where}]{suffix}"
