"""Settings: the example file is complete and valid; bad values name their key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "ztbridge.example.toml"


def _keys(model: type[Settings] | type, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys |= _keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def _documented(text: str) -> set[str]:
    """Keys set in the file, plus keys present only as commented-out examples."""
    uncommented = "\n".join(
        line.lstrip("# ") if line.startswith("# ") and " = " in line else line
        for line in text.splitlines()
    )
    data = tomllib.loads(uncommented)
    found = set()
    for key, value in data.items():
        if isinstance(value, dict):
            found |= {f"{key}.{k}" for k in value}
        else:
            found.add(key)
    return found


def test_example_documents_every_key() -> None:
    assert _keys(Settings) == _documented(EXAMPLE.read_text())


def test_example_loads_and_matches_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ZTBRIDGE_HOME", "ZTBRIDGE_CONFIG", "ZTBRIDGE_DICOM__PORT"):
        monkeypatch.delenv(var, raising=False)
    from_file = load_settings(EXAMPLE)
    defaults = load_settings()
    # home = "var" in the file is taken from the file's folder, the default from the cwd.
    assert from_file.home == EXAMPLE.resolve().parent / "var"
    assert from_file.model_dump(exclude={"home"}) == defaults.model_dump(exclude={"home"})


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTBRIDGE_DICOM__PORT", "2104")
    monkeypatch.setenv("ZTBRIDGE_DICOM__AE_TITLE", "HOSPITALPACS")
    s = load_settings(EXAMPLE)
    assert (s.dicom.port, s.dicom.ae_title) == (2104, "HOSPITALPACS")


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("ZTBRIDGE_DICOM__PORT", "0", "dicom.port"),
        ("ZTBRIDGE_DICOM__AE_TITLE", "A\\B", "dicom.ae_title"),
        ("ZTBRIDGE_DICOM__AE_TITLE", "WAY_TOO_LONG_AE_TITLE", "dicom.ae_title"),
        ("ZTBRIDGE_DICOM__HOST", "not-an-ip", "dicom.host"),
        ("ZTBRIDGE_CRYPTO__KEM", "rsa", "crypto.kem"),
        ("ZTBRIDGE_ENVIRONMENT", "staging", "environment"),
        ("ZTBRIDGE_STORE__PACK_MAX_MB", "-1", "store.pack_max_mb"),
    ],
)
def test_bad_values_name_the_key(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, key: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert key in str(info.value) and var in str(info.value)


def test_unknown_key_in_file_refused(tmp_path: Path) -> None:
    bad = tmp_path / "z.toml"
    bad.write_text("[dicom]\nprot = 104\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    assert "dicom.prot" in str(info.value)


def test_missing_config_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_production_refuses_placeholder_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTBRIDGE_ENVIRONMENT", "production")
    monkeypatch.setenv("ZTBRIDGE_CUSTODIAN_PASSPHRASE", "changeme")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings()
