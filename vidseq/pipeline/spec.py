"""Pipeline files: an ordered list of stages, each with its resolved config and its fingerprint.

A pipeline YAML names its stages (``synth``, ``extract``, ``train``, ``evaluate``, ``predict``)
and their config: shared sections for every stage (``config:``), and per stage (``stages[i].
config``); each is an inline mapping of config sections or a path (relative to the pipeline
file) to a YAML file of them, or a list of both, applied in order. Command-line overrides come
last: ``section.key=value`` applies to every stage, ``stage.section.key=value`` to one stage.

A stage's *key* is a digest of the config sections that stage reads (minus options that only
change how fast it runs) and of the keys of the stages it reads from, so changing the GRU's
hidden size changes the train key but not the extract key: extraction is reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vidseq.config import (
    VidseqConfig,
    apply_override,
    parse_override,
    read_yaml,
    validate_config,
    wants_motion,
    wants_pose,
)
from vidseq.errors import ConfigError

STAGE_NAMES = ("synth", "extract", "train", "evaluate", "predict")
FINGERPRINT_VERSION = 1

# The config sections each stage reads; only these go into its key.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "synth": ("synth",),
    "extract": ("io", "sampling", "data", "backbone", "extract"),
    "train": ("model", "train"),
    "evaluate": ("evaluate",),
    "predict": ("predict",),
}
# The stages whose outputs a stage reads (the nearest earlier one of each name in the list).
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "synth": (),
    "extract": ("synth",),
    "train": ("extract",),
    "evaluate": ("train",),
    "predict": ("train",),
}
# Options that change where or how fast a stage runs, never its result: not in the key.
EXECUTION_KEYS = frozenset(
    {
        "extract.out",
        "extract.num_workers",
        "extract.batch_size",
        "extract.chunk_frames",
        "extract.engine",
        "extract.ray_address",
        "train.features",
        "train.out",
        "predict.out",
    }
)

ConfigRef = str | dict[str, Any] | list[str | dict[str, Any]] | None


class StageSpec(BaseModel):
    """One entry of ``stages:``."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["synth", "extract", "train", "evaluate", "predict"]
    config: ConfigRef = None


class PipelineFile(BaseModel):
    """The top level of a pipeline YAML file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    experiment: str | None = Field(None, description="MLflow experiment (default: vidseq-<name>).")
    workdir: str | None = Field(None, description="Where stage outputs go (default: runs/<name>).")
    config: ConfigRef = None
    stages: list[StageSpec] = Field(min_length=1)

    @field_validator("stages", mode="before")
    @classmethod
    def _names_as_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


@dataclass
class Stage:
    """A stage ready to run: its resolved config, its inputs and its key."""

    name: str
    config: VidseqConfig
    inputs: list[str]
    key: str = ""
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def short_key(self) -> str:
        return self.key[:12]


@dataclass
class Pipeline:
    """A loaded pipeline: where it came from, where it writes, its stages in order."""

    name: str
    path: Path
    experiment: str
    workdir: Path
    config: VidseqConfig
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"{self.path}: no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    def resolved(self) -> dict[str, Any]:
        """The pipeline as it runs (every stage's full config), for the record."""
        return {
            "name": self.name,
            "experiment": self.experiment,
            "workdir": str(self.workdir),
            "stages": [
                {"name": s.name, "key": s.key, "inputs": s.inputs, "config": s.config.model_dump(mode="json")}
                for s in self.stages
            ],
        }


def load_pipeline(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, workdir: str | Path | None = None
) -> Pipeline:
    """Read a pipeline file, resolve every stage's config and compute the stage keys from the
    configs alone (``fingerprint_stages`` adds what else a key must cover, e.g. data files)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = PipelineFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pipeline_errors(path, exc)) from None
    names = [s.name for s in spec.stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: stage names must be unique, repeated: {', '.join(duplicates)}")
    shared_overrides, stage_overrides = _split_overrides(overrides, names, path)
    shared = _merge_refs({}, spec.config, path.parent)
    base = _with_overrides(shared, shared_overrides)
    stages = []
    for entry in spec.stages:
        data = _with_overrides(_merge_refs(copy.deepcopy(shared), entry.config, path.parent), shared_overrides)
        data = _with_overrides(data, stage_overrides.get(entry.name, []))
        origins = {tuple(parse_override(o)[0]): o for o in shared_overrides}
        origins.update({tuple(parse_override(o)[0]): f"{entry.name}.{o}" for o in stage_overrides.get(entry.name, [])})
        config = validate_config(data, source=f"{path} (stage {entry.name})", origins=origins)
        inputs = [n for n in STAGE_INPUTS[entry.name] if n in names[: names.index(entry.name)]]
        stages.append(Stage(entry.name, config, inputs))
    _motion_for_training(stages)
    fingerprint_stages(stages, {})
    return Pipeline(
        name=spec.name,
        path=path,
        experiment=spec.experiment or f"vidseq-{spec.name}",
        workdir=Path(workdir or spec.workdir or f"runs/{spec.name}"),
        config=validate_config(base, source=str(path)),
        stages=stages,
    )


def _motion_for_training(stages: list[Stage]) -> None:
    """An extract stage makes the motion (pose) stream when asked to or when a stage trains on it."""
    for section, wants in (("motion", wants_motion), ("pose", wants_pose)):
        if any(wants(stage.config) for stage in stages):
            for stage in stages:
                if stage.name == "extract":
                    getattr(stage.config, section).enabled = True


def stage_config(stage: Stage) -> dict[str, Any]:
    """The sections a stage reads, without execution-only options (what its key covers).

    The motion section counts for extraction only when the motion stream is made (keys of
    appearance-only extractions stay as they were before the motion stream existed)."""
    dumped = stage.config.model_dump(mode="json")
    out = {}
    for section in STAGE_SECTIONS[stage.name]:
        values = dumped[section]
        out[section] = {k: v for k, v in values.items() if f"{section}.{k}" not in EXECUTION_KEYS}
    if stage.name == "extract" and stage.config.motion.enabled:
        from vidseq.features.motion import MOTION_VERSION

        out["motion"] = {**dumped["motion"], "version": MOTION_VERSION}
    if stage.name == "extract" and stage.config.pose.enabled:  # likewise the pose stream
        from vidseq.features.pose import POSE_VERSION

        out["pose"] = {**dumped["pose"], "version": POSE_VERSION}
    if stage.name == "extract" and stage.config.actors.enabled:  # per-person stores: the tracking settings
        out["actors"] = {k: v for k, v in dumped["actors"].items() if k != "batch"}
    return out


def fingerprint_stages(stages: list[Stage], extra: dict[str, Any]) -> None:
    """Set each stage's key: its config sections, the keys of its inputs and ``extra[name]``
    (plus, for extraction, the versions of the code that decides which features a config gives:
    a vidseq that extracts differently never reuses old features)."""
    from vidseq.backbones.base import SPEC_VERSION
    from vidseq.features.keys import FEATURE_KEY_VERSION

    code = {"extract": {"features": FEATURE_KEY_VERSION, "backbone_spec": SPEC_VERSION}}
    keys: dict[str, str] = {}
    for stage in stages:
        stage.fingerprint = {
            "stage": stage.name,
            "version": FINGERPRINT_VERSION,
            "config": stage_config(stage),
            "code": code.get(stage.name),
            "inputs": {name: keys[name] for name in stage.inputs},
            "extra": extra.get(stage.name),
        }
        text = json.dumps(stage.fingerprint, sort_keys=True, separators=(",", ":"), default=str)
        stage.key = keys[stage.name] = hashlib.sha256(text.encode()).hexdigest()


def _split_overrides(overrides, names: list[str], path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """``section.key=v`` is shared; ``stage.section.key=v`` belongs to one stage."""
    shared: list[str] = []
    per_stage: dict[str, list[str]] = {}
    for item in overrides:
        keys, _ = parse_override(item)
        if len(keys) >= 3:
            if keys[0] not in names:
                raise ConfigError(
                    f"override {item!r}: {keys[0]!r} is not a stage of {path} ({', '.join(names)}); "
                    "use section.key=value for every stage or stage.section.key=value for one"
                )
            per_stage.setdefault(keys[0], []).append(item.split(".", 1)[1])
        else:
            shared.append(item)
    return shared, per_stage


def _with_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, item)
    return data


def _merge_refs(data: dict[str, Any], ref: ConfigRef, base_dir: Path) -> dict[str, Any]:
    """Apply a config reference (mapping, file path or a list of them) on top of ``data``."""
    if ref is None:
        return data
    for item in ref if isinstance(ref, list) else [ref]:
        layer = read_yaml(base_dir / item) if isinstance(item, str) else item
        if not isinstance(layer, dict):
            raise ConfigError(f"{base_dir}: a stage config must be a mapping of sections or a file path, got {item!r}")
        for section, values in layer.items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = copy.deepcopy(values)
    return data


def _pipeline_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid pipeline"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        if err["type"] == "extra_forbidden":
            lines.append(
                f"  unknown key '{key}' (pipeline keys: name, description, experiment, workdir, config, stages;"
                " a stage takes name and config)"
            )
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text of a plain dict (the resolved pipeline, a stage's config)."""
    return yaml.safe_dump(data, sort_keys=False)
