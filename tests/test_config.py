"""Configuration (docs/reference.md): where settings come from, their precedence, and how bad ones are refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import query_db, write_config
from pydantic import BaseModel

from delivery_sync.config import Settings, load_settings
from delivery_sync.errors import ConfigError


def _toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)  # whatever the umask: a ./config.toml others may write is refused
    return path


def test_defaults_without_any_file(tmp_path):
    settings = load_settings()
    assert settings.database == Path("delivery_stats.db")
    source = settings.source
    assert (source.url, source.timeout, source.max_retries, source.concurrency) == (None, 30, 5, 4)  # no default remote
    assert (source.min_interval, source.timezone, source.batch, source.batch_days) == (0.1, "Asia/Makassar", "auto", 31)
    assert source.max_consecutive_failures == 10 and source.token.get_secret_value() == ""
    assert (settings.sync.days_back, settings.sync.lookback_days) == (365, 3)
    assert settings.collect.timeout == 900 and settings.status.stale_after_hours == 26


def test_file_choice_flag_then_env_then_cwd_config(tmp_path, monkeypatch):
    _toml(tmp_path / "config.toml", '[source]\nurl = "http://cwd"\n')
    _toml(tmp_path / "env" / "c.toml", '[source]\nurl = "http://env-file"\n')
    _toml(tmp_path / "flag" / "c.toml", '[source]\nurl = "http://flag-file"\n')
    assert load_settings().source.url == "http://cwd"
    monkeypatch.setenv("DELIVERY_SYNC_CONFIG", str(tmp_path / "env" / "c.toml"))
    assert load_settings().source.url == "http://env-file"
    assert load_settings(tmp_path / "flag" / "c.toml").source.url == "http://flag-file"


def test_precedence_flag_over_env_over_file_over_default(tmp_path, monkeypatch):
    config = _toml(tmp_path / "c.toml", 'database = "file.db"\n[source]\nurl = "http://file"\nconcurrency = 3\ntimeout = 7\n')
    settings = load_settings(config)
    assert (settings.source.url, settings.source.concurrency, settings.source.timeout) == ("http://file", 3, 7)
    assert settings.source.max_retries == 5  # default where the file is silent

    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__URL", "http://env")
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__CONCURRENCY", "2")
    monkeypatch.setenv("DELIVERY_SYNC_DATABASE", "env.db")
    settings = load_settings(config)
    # The environment wins key by key; the file's other keys in the same section stay.
    assert (settings.source.url, settings.source.concurrency, settings.source.timeout) == ("http://env", 2, 7)
    assert settings.database == Path("env.db")

    settings = load_settings(config, database=Path("flag.db"), source={"url": "http://flag"})
    assert (settings.source.url, settings.source.concurrency, settings.source.timeout) == ("http://flag", 2, 7)
    assert settings.database == Path("flag.db")
    # An absent flag (None) hides nothing.
    assert load_settings(config, database=None, source={"url": None}).source.url == "http://env"


def test_token_from_the_environment_is_secret(monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__TOKEN", "tok-very-secret")
    settings = load_settings()
    assert settings.source.token.get_secret_value() == "tok-very-secret"
    assert "tok-very-secret" not in repr(settings) and "tok-very-secret" not in str(settings.source)


def test_relative_database_in_a_file_is_relative_to_the_files_folder(tmp_path):
    config = _toml(tmp_path / "etc" / "c.toml", 'database = "data/replica.db"\n')
    assert load_settings(config).database == tmp_path / "etc" / "data" / "replica.db"
    absolute = _toml(tmp_path / "etc" / "abs.toml", f'database = "{tmp_path / "abs.db"}"\n')
    assert load_settings(absolute).database == tmp_path / "abs.db"


def test_relative_database_from_flag_or_env_is_relative_to_cwd(tmp_path, monkeypatch):
    config = _toml(tmp_path / "etc" / "c.toml", 'database = "replica.db"\n')
    monkeypatch.setenv("DELIVERY_SYNC_DATABASE", "from-env.db")
    assert load_settings(config).database.resolve() == tmp_path / "from-env.db"
    assert load_settings(config, database=Path("from-flag.db")).database.resolve() == tmp_path / "from-flag.db"


def test_relative_database_end_to_end(cli, demo, tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    write_config(etc / "c.toml", demo.url, Path("replica.db"))
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    result = cli("--config", str(etc / "c.toml"), "sync", "--days-back", "1", "--clients", "1")
    assert result.code == 0, result.stderr
    assert query_db(etc / "replica.db", "SELECT COUNT(*) FROM client_stats") == [(1,)]
    assert not (run / "replica.db").exists()

    result = cli("--config", str(etc / "c.toml"), "--db", "flag.db", "sync", "--days-back", "1", "--clients", "1")
    assert result.code == 0, result.stderr
    assert query_db(run / "flag.db", "SELECT COUNT(*) FROM client_stats") == [(1,)]

    monkeypatch.setenv("DELIVERY_SYNC_DATABASE", "env.db")
    result = cli("--config", str(etc / "c.toml"), "sync", "--days-back", "1", "--clients", "1")
    assert result.code == 0, result.stderr
    assert query_db(run / "env.db", "SELECT COUNT(*) FROM client_stats") == [(1,)]


@pytest.mark.parametrize(
    "text, key",
    [
        ("bogus = 1\n", "bogus"),
        ("[source]\nurll = 'http://x'\n", "source.urll"),
        ("[nosection]\na = 1\n", "nosection"),
        ("[source]\nconcurrency = 'many'\n", "source.concurrency"),
        ("[source]\ntimeout = -1\n", "source.timeout"),
        ("[source]\nbatch = 'sometimes'\n", "source.batch"),
        ("[source]\ntimezone = 'Mars/Olympus'\n", "source.timezone"),
        ("[sync]\ndays_back = 0\n", "sync.days_back"),
        ("[status]\nstale_after_hours = 'soon'\n", "status.stale_after_hours"),
        # Numbers past what a timer, a buffer or a date can hold: refused here, not an overflow mid-run.
        ("[source]\ntimeout = inf\n", "source.timeout"),
        ("[source]\ntimeout = 1e12\n", "source.timeout"),
        ("[source]\nmin_interval = inf\n", "source.min_interval"),
        ("[source]\nbatch_days = 9999999999\n", "source.batch_days"),
        ("[source]\nmax_answer_mb = inf\n", "source.max_answer_mb"),
        ("[source]\nconcurrency = 100000\n", "source.concurrency"),
        ("[sync]\nlookback_days = 99999999999999999999\n", "sync.lookback_days"),
        ("[sync]\ndays_back = 99999999999999999999\n", "sync.days_back"),
        ("[sync]\ndeadline_minutes = nan\n", "sync.deadline_minutes"),
        ("[collect]\ntimeout = 1e300\n", "collect.timeout"),
        ("[status]\nstale_after_hours = nan\n", "status.stale_after_hours"),
    ],
)
def test_bad_file_key_or_type_exits_2_naming_the_key(cli, tmp_path, text, key):
    _toml(tmp_path / "config.toml", text)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: ")
    assert f" {key}: " in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "delivery_stats.db").exists()


def test_a_database_that_is_not_text_says_what_it_should_be(cli, tmp_path):
    _toml(tmp_path / "config.toml", "database = 5\n")
    result = cli("status")
    assert result.code == 2
    assert result.stderr.strip() == (f"error: invalid config: database: should be a file path or a postgresql:// URL, "
                                     f"as a quoted string (got 5) [{tmp_path / 'config.toml'} or DELIVERY_SYNC_DATABASE]")


@pytest.mark.parametrize(
    "variable, value, key",
    [
        ("DELIVERY_SYNC_SOURCE__CONCURRENCY", "four", "source.concurrency"),
        ("DELIVERY_SYNC_SYNC__DAYS_BACK", "-3", "sync.days_back"),
        ("DELIVERY_SYNC_SOURCE__TOKN", "x", "source.tokn"),  # a typo must not be ignored silently
        ("DELIVERY_SYNC_DATABSE", "x.db", "databse"),
        ("DELIVERY_SYNC_SOURCE__TIMEOUT", "inf", "source.timeout"),
        ("DELIVERY_SYNC_COLLECT__TIMEOUT", "1e12", "collect.timeout"),
    ],
)
def test_bad_environment_key_or_type_exits_2_naming_the_key(cli, tmp_path, monkeypatch, variable, value, key):
    monkeypatch.setenv(variable, value)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and f"invalid config: {key}: " in result.stderr
    assert variable in result.stderr
    assert not (tmp_path / "delivery_stats.db").exists()


def test_wrong_token_type_never_echoes_the_value(tmp_path):
    config = _toml(tmp_path / "c.toml", "[source]\ntoken = 123456789\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert "source.token" in str(info.value) and "123456789" not in str(info.value)


def test_missing_config_file_exits_2(cli, tmp_path, monkeypatch):
    result = cli("--config", "nowhere.toml", "sync", "--days-back", "1")
    assert result.code == 2 and "nowhere.toml" in result.stderr and "--config" in result.stderr
    monkeypatch.setenv("DELIVERY_SYNC_CONFIG", str(tmp_path / "gone.toml"))
    result = cli("sync", "--days-back", "1")
    assert result.code == 2 and "gone.toml" in result.stderr and "DELIVERY_SYNC_CONFIG" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_config_path_that_is_no_file_says_so(cli, tmp_path, monkeypatch):
    folder = tmp_path / "conf.d"
    folder.mkdir()
    result = cli("--config", str(folder), "status")
    assert (result.code, result.stderr.strip()) == (2, f"error: config file {folder} (from --config) is not a file")
    (tmp_path / "config.toml").mkdir()  # found in the current folder: refused, not skipped
    result = cli("status")
    assert result.code == 2 and result.stderr.startswith("error: ./config.toml is not a file")
    (tmp_path / "config.toml").rmdir()
    (tmp_path / "config.toml").symlink_to(tmp_path / "gone" / "config.toml")  # a dangling link
    result = cli("status")
    assert result.code == 2 and result.stderr.startswith("error: ./config.toml is not a file")


def test_toml_syntax_error_exits_2(cli, tmp_path):
    _toml(tmp_path / "config.toml", "[source\nurl = \n")
    result = cli("sync", "--days-back", "1")
    assert result.code == 2 and "config.toml" in result.stderr and result.stderr.count("\n") == 1


def test_config_example_documents_every_key_with_its_default():
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    with example.open("rb") as file:
        written = tomllib.load(file)
    # Every key of the Settings model, by section (None: a top-level key such as `database`).
    expected = {name: set(info.annotation.model_fields) if isinstance(info.annotation, type)
                and issubclass(info.annotation, BaseModel) else None for name, info in Settings.model_fields.items()}
    assert {name: set(value) if isinstance(value, dict) else None for name, value in written.items()} == expected
    # Loaded by the real loader, the example changes nothing: its values are the defaults, but for
    # source.url, which has none (a run without one stops, so the example names the usual remote).
    settings, defaults = load_settings(example), Settings()
    assert settings.config_file == example
    assert settings.database == example.parent / defaults.database
    assert defaults.source.url is None and settings.source.url == "http://127.0.0.1:3000"
    for section in expected.keys() - {"database"}:
        loaded, default = getattr(settings, section).model_dump(), getattr(defaults, section).model_dump()
        if section == "source":
            loaded.pop("url"), default.pop("url")
        assert loaded == default, section


@pytest.mark.parametrize("args", [
    ("--db", "postgresql://writer:2024/s3cret@127.0.0.1:5432/delivery", "status"),  # a '/' in the password
    ("--db", "postgresql://writer@db.internal/?password=s3cret", "status"),  # no database named
    ("--db", "postgresql://writer@db.internal:70000/delivery?sslpassword=s3cret", "status", "--format", "prometheus"),
    ("status", "--db", "postgresql://writer:s3cret@db.internal/delivery"),  # a global option after the command
])
def test_a_postgresql_password_is_never_printed_by_a_refusal(cli, tmp_path, args):
    result = cli(*args)
    assert result.code == 2 and "s3cret" not in result.stdout + result.stderr
    assert "[redacted]" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("given", ["flag", "file", "environment"])
def test_a_libpq_connection_string_is_refused_not_made_a_file_named_after_its_password(cli, tmp_path, monkeypatch, given):
    """`host=... password=... dbname=...` is how libpq's own tools take a server; as `database` it
    was a SQLite file name: a sync created a file named after the password, and hints printed it."""
    monkeypatch.chdir(tmp_path)
    pairs = "host=127.0.0.1 port=5432 user=writer password=s3cret dbname=delivery"
    args = ["sync", "--source", "demo", "--days-back", "1"]
    if given == "flag":
        result = cli("--db", pairs, *args)
    elif given == "file":
        result = cli("--config", str(_toml(tmp_path / "c.toml", f'database = "{pairs}"\n')), *args)
    else:
        monkeypatch.setenv("DELIVERY_SYNC_DATABASE", pairs)
        result = cli(*args)
    assert result.code == 2 and "key=value connection strings are not read: write a URL, postgresql://" in result.stderr
    assert "password=[redacted]" in result.stderr and "s3cret" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == (["c.toml"] if given == "file" else [])


def test_a_url_with_one_slash_is_refused_and_one_without_a_host_is_shown_with_its_slashes(cli, tmp_path, monkeypatch):
    """A URL without a host (`postgresql:///db?host=...`) was shown as `postgresql:/db?...` in
    hints, and that pasted back was taken for a file path, printed with its password."""
    monkeypatch.chdir(tmp_path)
    one_slash = cli("--db", "postgresql:/delivery?host=127.0.0.1&password=s3cret@tail", "status")
    assert one_slash.code == 2 and "a PostgreSQL URL starts with postgresql:// (two slashes)" in one_slash.stderr
    assert "password=[redacted]" in one_slash.stderr and "s3cret" not in one_slash.stderr and "tail" not in one_slash.stderr
    no_host = "postgresql:///delivery?host=127.0.0.1&port=1&password=s3cret"  # nothing listens on port 1
    down = cli("--db", no_host, "status")
    assert down.code == 1 and "postgresql:///delivery?host=127.0.0.1&port=1&password=[redacted]" in down.stderr
    # libpq asks "Is the server running on that host ...?" itself: the hint does not ask it again.
    assert "Is the server running" in down.stderr and "is the PostgreSQL server running" not in down.stderr
    assert "s3cret" not in down.stdout + down.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pairs", [
    "connect_timeout=5 host=localhost password=s3cret",  # any libpq key first, not only host or user
    "host=x password = s3cret",  # spaces around '='
    "host=x password='s3cret pw' dbname=d",  # a quoted value with a space
])
def test_every_libpq_connection_string_is_refused_and_its_password_never_shown(cli, tmp_path, monkeypatch, pairs):
    monkeypatch.chdir(tmp_path)
    result = cli("--db", pairs, "status")
    assert result.code == 2 and "key=value connection strings are not read" in result.stderr, result.stderr
    assert "s3cret" not in result.stdout + result.stderr and " pw'" not in result.stderr and list(tmp_path.iterdir()) == []


def test_a_bad_value_from_the_environment_names_the_variable_alone(cli, tmp_path, monkeypatch):
    """The environment beats the file: with the variable set, the file is not where to look."""
    _toml(tmp_path / "config.toml", "[sync]\ndays_back = 30\n")
    monkeypatch.setenv("DELIVERY_SYNC_SYNC__DAYS_BACK", "abc")
    result = cli("status")
    assert result.code == 2 and result.stderr.strip().endswith("(got 'abc') [DELIVERY_SYNC_SYNC__DAYS_BACK]"), result.stderr


@pytest.mark.parametrize("where", ["file", "environment", "flag"])
def test_an_empty_database_says_it_is_empty(cli, tmp_path, monkeypatch, where):
    """`database = ""` was the current folder, and then "is a folder, not a replica file"."""
    args = ("status",)
    if where == "file":
        _toml(tmp_path / "config.toml", 'database = ""\n')
    elif where == "environment":
        monkeypatch.setenv("DELIVERY_SYNC_DATABASE", " ")
    else:
        args = ("--db", "", "status")
    result = cli(*args)
    assert result.code == 2 and ("database: " in result.stderr or "--db: " in result.stderr)
    assert "is empty: set it to a file path or a postgresql:// URL" in result.stderr and "folder" not in result.stderr, result.stderr


@pytest.mark.parametrize("text, variable, said", [
    ("[source]\nurl = 'http://x'\ntimout = 5\n", None, "source.timout: unknown key; did you mean source.timeout?"),
    ("url = 'http://x'\n", None, "url: unknown key; did you mean source.url?"),  # outside its section
    ("[sync]\nstale_after_hours = 3\n", None, "sync.stale_after_hours: unknown key; did you mean status.stale_after_hours?"),
    ("", "DELIVERY_SYNC_SOURCE__TOKN", "source.tokn: unknown key; did you mean source.token?"),
    ("[source]\nzzz = 1\n", None, "source.zzz: unknown key ["),  # nothing close: no guess
])
def test_an_unknown_key_suggests_the_key_meant(cli, tmp_path, monkeypatch, text, variable, said):
    _toml(tmp_path / "config.toml", text)
    if variable:
        monkeypatch.setenv(variable, "x")
    result = cli("status")
    assert result.code == 2 and said in result.stderr, result.stderr
