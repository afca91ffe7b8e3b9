"""Config loading: typed sections, unknown keys and wrong types named with their file, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidseq.config import VidseqConfig, load_config, parse_override, to_yaml
from vidseq.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, VidseqConfig)
    assert cfg.sampling.mode == "uniform" and cfg.sampling.count == 16
    assert cfg.io.backend == "auto"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    load_config(path)


def test_default_yaml_spells_out_the_defaults():
    assert load_config(CONFIGS / "default.yaml") == VidseqConfig()


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sampling:\n  mdoe: dense\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n.*unknown key 'sampling\.mdoe'.*did you mean 'mode'"):
        load_config(path)


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sampler:\n  mode: dense\n")
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'sampler'.*did you mean .sampling.*valid keys: "
        r"actors, backbone, data, evaluate, extract, io, model, motion, pose, predict, sampling, synth, train",
    ):
        load_config(path)


def test_wrong_type_names_key_and_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sampling:\n  count: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml(.|\n)*sampling\.count: .*integer.*'many'"):
        load_config(path)


def test_bad_enum_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("io:\n  backend: ffmpeg\n")
    with pytest.raises(ConfigError, match=r"io\.backend: .*'decord'"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("sampling: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"top level must be a mapping"):
        load_config(path)


def test_overrides_are_typed_and_win_over_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("sampling:\n  count: 8\n  mode: dense\n")
    cfg = load_config(path, ["sampling.count=4", "sampling.target_fps=2.5", "synth.classes=[grow, shrink]"])
    assert cfg.sampling.count == 4 and cfg.sampling.mode == "dense"
    assert cfg.sampling.target_fps == 2.5
    assert cfg.synth.classes == ["grow", "shrink"]


def test_bad_override_names_the_override():
    with pytest.raises(ConfigError, match=r"unknown key 'sampling\.cont' \(from -o sampling\.cont=3\)"):
        load_config(None, ["sampling.cont=3"])
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        parse_override("sampling.count")
    with pytest.raises(ConfigError, match=r"'count' is a value, not a section"):
        load_config(None, ["sampling.count=3", "sampling.count.x=1"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["sampling.count=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_readme_config_reference_lists_every_key():
    readme = (CONFIGS.parent / "README.md").read_text()
    for section, field in VidseqConfig.model_fields.items():
        for key in field.annotation.model_fields:
            assert f"| `{section}.{key}` |" in readme, f"README's config reference misses {section}.{key}"
