"""``common.config``: secrets (never empty, HMAC keys long enough), credentials kept out of URLs,
and no password in clear text beyond the machine without an explicit opt-in (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, Table, is_loopback

HINT = "a random 32-byte secret: `openssl rand -hex 32`"


def secret(data: dict[str, object], tmp_path: Path | None = None,
           env: dict[str, str] | None = None, min_bytes: int = 1, hint: str = "") -> str | None:
    t = Table(data, "hook", base_dir=tmp_path, env=env or {})
    return t.secret("secret", min_bytes=min_bytes, hint=hint)


def refusal(data: dict[str, object], tmp_path: Path | None = None,
            env: dict[str, str] | None = None, min_bytes: int = 1, hint: str = ""
            ) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        secret(data, tmp_path, env, min_bytes, hint)
    return err.value


def test_a_secret_inline_in_a_file_or_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("  from-file \n")
    assert secret({"secret": "inline"}) == "inline"
    assert secret({"secret_file": "s"}, tmp_path) == "from-file"
    assert secret({"secret_env": "S"}, env={"S": "from-env"}) == "from-env"
    assert secret({}) is None


def test_an_empty_secret_is_refused_naming_the_key_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text(" \n\n")
    inline = refusal({"secret": ""})
    assert (inline.key, str(inline)) == ("hook.secret", "hook.secret: must not be empty")
    in_file = refusal({"secret_file": "empty"}, tmp_path)
    assert (in_file.key, str(in_file)) == (
        "hook.secret_file", f"hook.secret_file: {tmp_path / 'empty'} is empty")
    in_env = refusal({"secret_env": "S"}, env={"S": ""})
    assert (in_env.key, str(in_env)) == (
        "hook.secret_env", "hook.secret_env: environment variable S is empty")


def test_a_minimum_length_counts_utf8_bytes_and_never_echoes_the_value(tmp_path: Path) -> None:
    assert secret({"secret": "键" * 11}, min_bytes=32, hint=HINT) == "键" * 11  # 33 bytes
    short = refusal({"secret": "s3cret-键"}, min_bytes=32, hint=HINT)
    assert str(short) == f"hook.secret: must be at least 32 bytes, got 10 ({HINT})"
    assert "s3cret" not in str(short)
    (tmp_path / "s").write_text("x" * 31 + "\n")
    in_file = refusal({"secret_file": "s"}, tmp_path, min_bytes=32, hint=HINT)
    assert str(in_file) == f"hook.secret_file: must be at least 32 bytes, got 31 ({HINT})"
    in_env = refusal({"secret_env": "S"}, env={"S": "x"}, min_bytes=32)
    assert str(in_env) == "hook.secret_env: must be at least 32 bytes, got 1"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("LOCALHOST", True),
    ("10.0.0.2", False), ("::", False), ("0.0.0.0", False), ("broker.local", False),
    ("localhost.example.com", False), ("127.0.0.1.nip.io", False),
])
def test_loopback_is_127_8_the_ipv6_loopback_or_localhost(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def plaintext(data: dict[str, object], url: str, given: str | None) -> None:
    t = Table(data, "mqtt")
    t.refuse_plaintext("url", url, "password", given)
    t.finish()


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:1883", "mqtt://[::1]", "mqtt://localhost",
                                 "mqtts://broker.example", "https://influx.example"])
def test_a_password_may_go_over_tls_or_to_loopback(url: str) -> None:
    plaintext({}, url, "pw")


def test_a_password_in_clear_text_to_another_host_needs_allow_plaintext() -> None:
    with pytest.raises(ConfigError) as err:
        plaintext({}, "mqtt://broker.example:1883", "pw")
    assert (err.value.key, str(err.value)) == ("mqtt.url", (
        "mqtt.url: mqtt:// sends the password unencrypted to broker.example (not a loopback "
        "address); use mqtts://, or set allow_plaintext = true in [mqtt] to accept that risk"))
    with pytest.raises(ConfigError, match=r"^mqtt\.url: http:// sends the password .* use "
                                          r"https://"):
        plaintext({}, "http://10.0.0.5:8086", "pw")
    plaintext({"allow_plaintext": True}, "mqtt://broker.example", "pw")
    plaintext({}, "mqtt://broker.example", None)  # nothing secret to see
    with pytest.raises(ConfigError, match=r"mqtt\.allow_plaintext: must be true or false"):
        plaintext({"allow_plaintext": "yes"}, "mqtt://broker.example", "pw")


@pytest.mark.parametrize("url", ["mqtt://u:p@h", "mqtt://u@h:1883", "http://:tok@h/x",
                                 "https://u:p@[::1]:8086/?q=1"])
def test_credentials_in_a_url_are_refused_without_echoing_them(url: str) -> None:
    t = Table({}, "influx")
    with pytest.raises(ConfigError) as err:
        t.refuse_url_credentials("url", url, "token")
    assert (err.value.key, str(err.value)) == (
        "influx.url", "influx.url: must not carry credentials; use token")


@pytest.mark.parametrize("url", ["mqtt://h", "http://h/a@b", "http://h/?who=a@b", "http://h#@x",
                                 "not a url"])
def test_an_at_sign_after_the_host_is_not_a_credential(url: str) -> None:
    Table({}, "influx").refuse_url_credentials("url", url, "token")
