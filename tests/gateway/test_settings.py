"""Settings: the operator's contract, read from the environment and validated at start."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backends.vllm import VllmSettings
from gateway.settings import Settings, describe_errors
from tests.support.env import without_gateway_env


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_gateway_env(monkeypatch, tmp_path)


def test_defaults_are_one_vllm_backend_on_its_default_port() -> None:
    settings = Settings()
    assert settings.primary == "vllm"
    assert settings.backends == {"vllm": VllmSettings(url="http://127.0.0.1:8000")}
    assert settings.models == []


def test_backends_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "GATEWAY_BACKENDS",
        '{"a": {"kind": "vllm", "url": "http://10.0.0.1:8000", "model": "phi3", "read_timeout": 5},'
        ' "b": {"kind": "trtllm-serve", "url": "http://10.0.0.2:8000"}}',
    )
    monkeypatch.setenv("GATEWAY_PRIMARY", "a")
    settings = Settings()
    assert settings.backends["a"].model == "phi3"
    assert settings.backends["a"].read_timeout == 5
    assert settings.backends["b"].kind == "trtllm-serve"


def test_backends_from_nested_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_BACKENDS__main__kind", "vllm")
    monkeypatch.setenv("GATEWAY_BACKENDS__main__url", "http://127.0.0.1:9000")
    monkeypatch.setenv("GATEWAY_BACKENDS__main__max_concurrency", "8")
    monkeypatch.setenv("GATEWAY_PRIMARY", "main")
    monkeypatch.setenv("GATEWAY_MODELS", '["phi-3-mini"]')
    settings = Settings()
    assert settings.backends["main"].max_concurrency == 8
    assert settings.models == ["phi-3-mini"]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GATEWAY_PORT=9999\n")
    assert Settings().port == 9999


# A replica pool's fields, each wrong, and the start of the line that names it.
BAD_POOLS: list[tuple[dict[str, object], str]] = [
    ({"url": "http://a:1", "urls": ["http://b:1"]}, "BACKENDS__X: set url (one"),
    ({"urls": ["http://a:1", "http://a:1"]}, "BACKENDS__X: urls lists an endpoint"),
    ({"urls": ["http://a:1"], "discovery": "dns"}, "BACKENDS__X: discovery dns"),
    ({"url": "https://h", "discovery": "dns"}, "BACKENDS__X: discovery dns is for"),
    ({"urls": ["http://a:1", "h:1"]}, "BACKENDS__X__URLS: must be an http(s) URL"),
    ({"url": "http://a", "affinity_max_load": 0.9}, "BACKENDS__X__AFFINITY_MAX_LOAD: In"),
    ({"url": "http://a", "max_ejected_percent": 101}, "BACKENDS__X__MAX_EJECTED_PERCENT: In"),
    ({"url": "http://a", "balance": "random"}, "BACKENDS__X__BALANCE: Input"),
]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_PRIMARY": "nope"}, "GATEWAY_PRIMARY='nope' is not one of GATEWAY_BACKENDS"),
        (
            {"GATEWAY_BACKENDS__vllm__kind": "vllm", "GATEWAY_BACKENDS__vllm__read_timeout": "-1"},
            "GATEWAY_BACKENDS__VLLM__READ_TIMEOUT: Input should be greater than 0",
        ),
        (
            {"GATEWAY_BACKENDS__vllm__kind": "vllm", "GATEWAY_BACKENDS__vllm__url": "ftp://x"},
            "GATEWAY_BACKENDS__VLLM__URL: must be an http(s) URL",
        ),
        (
            {
                "GATEWAY_BACKENDS__vllm__kind": "vllm",
                "GATEWAY_BACKENDS__vllm__url": "http://h:1/v1",
            },
            "without the trailing /v1",
        ),
        (
            {"GATEWAY_BACKENDS": '{"x": {"kind": "tgi", "url": "http://h:1"}}'},
            "GATEWAY_BACKENDS__X: Input tag 'tgi'",
        ),
        ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT: Input should be less than or equal to 65535"),
        *(
            ({"GATEWAY_BACKENDS": json.dumps({"x": {"kind": "vllm", **pool}})}, f"GATEWAY_{where}")
            for pool, where in BAD_POOLS
        ),
        *(
            (
                {"GATEWAY_BUSY_POLL_US": value},
                "GATEWAY_BUSY_POLL_US: must be auto, or whole µs from 0",
            )
            for value in ("20000", "-1", "fast", "", "3.5", "true")
        ),
    ],
)
def test_bad_settings_name_the_env_var(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert expected in describe_errors(caught.value)


@pytest.mark.parametrize("kind", ["vllm", "trtllm-serve"])
def test_urls_stand_in_for_url(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # trtllm-serve has no default url; a single listed endpoint is served as plain `url`.
    pools = {
        "two": {"kind": kind, "urls": ["http://a:1/", "http://b:1"]},
        "one": {"kind": kind, "urls": ["http://c:1"]},
    }
    monkeypatch.setenv("GATEWAY_BACKENDS", json.dumps(pools))
    monkeypatch.setenv("GATEWAY_PRIMARY", "two")
    two, one = Settings().backends["two"], Settings().backends["one"]
    assert (two.pooled, two.endpoint_urls()) == (True, ["http://a:1", "http://b:1"])
    assert (one.pooled, one.url, one.endpoint_urls()) == (False, "http://c:1", ["http://c:1"])


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("0", 0), ("10000", 10_000)])
def test_busy_poll_is_auto_or_whole_microseconds(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | str
) -> None:
    monkeypatch.setenv("GATEWAY_BUSY_POLL_US", value)
    assert Settings().busy_poll_us == expected


def test_cli_reports_bad_config_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PRIMARY", "missing")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "GATEWAY_PRIMARY='missing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_keys_from_list_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    hashed = hashlib.sha256(b"from-file-hashed").hexdigest()
    keys_file.write_text(f"# comment\nfrom-file\nsha256:{hashed}\n")
    settings = Settings(api_keys=["listed"], api_keys_file=keys_file)  # type: ignore[list-item]
    digests = settings.key_digests()
    assert [
        hashlib.sha256(k).digest() for k in (b"listed", b"from-file", b"from-file-hashed")
    ] == digests


def test_check_config_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RECORDS_URL", "postgresql://gw:s3cret-pw@db:5432/pairs")
    monkeypatch.setenv("GATEWAY_API_KEYS", '["sk-very-secret"]')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout
    assert "sk-very-secret" not in result.stdout
    assert "postgresql://gw:***@db:5432/pairs" in result.stdout
