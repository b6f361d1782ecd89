import pytest

from aim.config import load_settings, redact_url
from aim.errors import ConfigError


def test_defaults_use_embedded_backends():
    settings = load_settings({})
    assert settings.embedded_database
    assert settings.embedded_redis
    assert settings.db_pool_max >= settings.db_pool_min


def test_urls_are_read():
    settings = load_settings(
        {"AIM_DATABASE_URL": "postgresql://u:p@127.0.0.1/x", "AIM_REDIS_URL": "redis://127.0.0.1:6379/0"}
    )
    assert settings.database_url == "postgresql://u:p@127.0.0.1/x"
    assert not settings.embedded_redis


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"AIM_DATABASE_URL": "mysql://127.0.0.1/x"}, ["AIM_DATABASE_URL", "postgresql://"]),
        ({"AIM_REDIS_URL": "http://127.0.0.1"}, ["AIM_REDIS_URL", "redis://"]),
        ({"AIM_DB_POOL_MAX": "ten"}, ["AIM_DB_POOL_MAX", "whole number"]),
        ({"AIM_DB_POOL_MAX": "0"}, ["AIM_DB_POOL_MAX", "from 1 to 500"]),
        ({"AIM_DB_POOL_MIN": "5", "AIM_DB_POOL_MAX": "2"}, ["AIM_DB_POOL_MAX", "AIM_DB_POOL_MIN"]),
        ({"AIM_LOG_LEVEL": "LOUD"}, ["AIM_LOG_LEVEL", "DEBUG"]),
        ({"AIM_DB_POOL_TIMEOUT": "soon"}, ["AIM_DB_POOL_TIMEOUT", "seconds"]),
        ({"AIM_DATABASE_REPLICA_URL": "postgresql://r/x"}, ["AIM_DATABASE_REPLICA_URL", "AIM_DATABASE_URL"]),
    ],
)
def test_bad_value_names_variable_and_form(env, names):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_data_dir_that_is_a_file_is_rejected(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="AIM_DATA_DIR"):
        load_settings({"AIM_DATA_DIR": str(path)})


def test_redact_url_hides_password():
    assert redact_url("postgresql://aim:s3cret@db:5432/aim") == "postgresql://aim:***@db:5432/aim"
    assert "s3cret" not in redact_url("redis://:s3cret@127.0.0.1:6379/0")
    assert redact_url("postgresql://aim@db/aim") == "postgresql://aim@db/aim"


def test_relative_data_dir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"AIM_DATA_DIR": "relative/dir"})
    assert settings.data_dir.is_absolute()
    assert settings.data_dir == tmp_path / "relative" / "dir"
