"""Typed config loading: bad keys and types fail at start-up with the key named."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from dexh2r_core.config import ConfigError, from_dict, load_config, to_dict


@dataclass(frozen=True)
class Camera:
    serial: str
    fps: int = 30
    exposure: float = 0.5
    mode: Literal["live", "file"] = "live"


@dataclass(frozen=True)
class Rig:
    name: str
    cameras: list[Camera] = field(default_factory=list)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tags: dict[str, int] = field(default_factory=dict)
    enabled: bool = True
    note: str | None = None


def test_loads_nested_dataclasses(tmp_path):
    path = tmp_path / "rig.yaml"
    path.write_text("name: lab\ncameras:\n  - {serial: '123', fps: 15}\norigin: [1, 2, 3]\ntags: {a: 1}\n")
    rig = load_config(Rig, path)
    assert rig.cameras[0] == Camera(serial="123", fps=15)
    assert rig.origin == (1.0, 2.0, 3.0) and isinstance(rig.origin[0], float)
    assert to_dict(rig)["cameras"][0]["fps"] == 15


def test_unknown_key_is_named_with_suggestion(tmp_path):
    path = tmp_path / "rig.yaml"
    path.write_text("name: lab\ncameras:\n  - {serial: '1', fsp: 15}\n")
    with pytest.raises(ConfigError) as err:
        load_config(Rig, path)
    message = str(err.value)
    assert str(path) in message and "cameras[0].fsp" in message and "did you mean 'fps'" in message


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"name": "x", "cameras": [{"serial": 5}]}, "cameras[0].serial", "expected a string"),
        ({"name": "x", "cameras": [{"serial": "a", "fps": "fast"}]}, "cameras[0].fps", "expected an integer"),
        ({"name": "x", "cameras": [{"serial": "a", "fps": True}]}, "cameras[0].fps", "expected an integer"),
        ({"name": "x", "cameras": [{"serial": "a", "mode": "usb"}]}, "cameras[0].mode", "must be one of"),
        ({"name": "x", "origin": [1, 2]}, "origin", "expected 3 items"),
        ({"name": "x", "enabled": "yes"}, "enabled", "expected true/false"),
        ({"name": "x", "tags": {"a": 1.5}}, "tags.a", "expected an integer"),
        ({"cameras": []}, "name", "required key is missing"),
    ],
)
def test_wrong_types_name_the_key(data, key, reason):
    with pytest.raises(ConfigError) as err:
        from_dict(Rig, data, source="rig.yaml")
    assert f"rig.yaml: {key}: {reason}" in str(err.value)


def test_overrides_use_dotted_keys(tmp_path):
    path = tmp_path / "cam.yaml"
    path.write_text("serial: '1'\nfps: 30\n")
    assert load_config(Camera, path, overrides={"fps": 15}).fps == 15
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(Camera, path, overrides={"fpz": 15})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Camera, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("serial: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Camera, bad)
