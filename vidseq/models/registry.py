"""The table of temporal models: name -> builder, plus checkpoints that rebuild a model by name.

Place in the data flow: the training loop asks ``build_model(name, input_dim=D,
num_classes=C, **options)`` for a ``features (B, T, D) -> logits (B, C)`` module and saves
``make_checkpoint(name, model)``; prediction rebuilds it with ``load_model(checkpoint)``. A
checkpoint holds only plain types and tensors: ``torch.load(path, weights_only=True)`` reads it,
and no pickled class can break when code moves (mlflow/mlflow#9514).

``late_fusion`` (``LateFusion``) holds other models of the table: its ``members`` option lists
each one's name, hparams and dims, so its checkpoint is plain types too.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from vidseq.errors import ConfigError
from vidseq.models.baselines import MeanPoolClassifier, TemporalConvClassifier
from vidseq.models.fusion import LateFusion, Member
from vidseq.models.recurrent import RecurrentClassifier
from vidseq.models.streams import layout_from_motion_dims
from vidseq.models.transformer import TransformerClassifier

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}
CHECKPOINT_KEYS = ("name", "hparams", "state_dict")


def register_model(name: str, builder: Builder) -> Builder:
    """Put ``builder(input_dim, num_classes, *, **options) -> nn.Module`` in the table."""
    if name in MODELS:
        raise ConfigError(f"model {name!r} is already registered")
    MODELS[name] = builder
    return builder


register_model("lstm", functools.partial(RecurrentClassifier, cell="lstm"))
register_model("gru", functools.partial(RecurrentClassifier, cell="gru"))
register_model("meanpool", MeanPoolClassifier)
register_model("tcn", TemporalConvClassifier)
register_model("transformer", TransformerClassifier)


def build_late_fusion(
    input_dim: int, num_classes: int, *, members: list[dict[str, Any]], weights: list[float]
) -> LateFusion:
    """A ``LateFusion`` of fresh members from their ``{"stream", "name", "hparams", "dims"}``
    (the ``members`` of its hparams); the weights come with a checkpoint's state_dict."""
    built = []
    for member in members:
        if not isinstance(member, Mapping) or set(member) != {"stream", "name", "hparams", "dims"}:
            raise ConfigError(f"late_fusion members must be dicts of stream, name, hparams, dims; got {member!r}")
        name, hparams = member["name"], dict(member["hparams"])
        if name == "late_fusion":
            raise ConfigError("a late_fusion member cannot be a late_fusion itself")
        dim, classes, options = _split_hparams(name, hparams)
        start, stop = (int(d) for d in member["dims"])
        built.append(
            Member(
                str(member["stream"]),
                name,
                build_model(name, input_dim=dim, num_classes=classes, **options),
                start,
                stop,
            )
        )
    model = LateFusion(built, weights)
    if (model.hparams["input_dim"], model.hparams["num_classes"]) != (input_dim, num_classes):
        raise ConfigError(
            f"late_fusion members read {model.hparams['input_dim']} dims into "
            f"{model.hparams['num_classes']} classes, not {input_dim} into {num_classes}"
        )
    return model


register_model("late_fusion", build_late_fusion)


def list_models() -> list[str]:
    """The valid model names, sorted."""
    return sorted(MODELS)


def model_options(name: str) -> list[str]:
    """The options ``build_model(name, ...)`` accepts beyond ``input_dim`` and ``num_classes``."""
    builder = _lookup(name)
    params = inspect.signature(builder).parameters
    return sorted(set(params) - {"input_dim", "num_classes"} - set(_fixed(builder)))


def build_model(name: str, *, input_dim: int, num_classes: int, **options: Any) -> nn.Module:
    """Build the model ``name`` for ``features (B, T, input_dim)`` -> ``logits (B, num_classes)``.

    Unknown names and options are ConfigErrors that list the valid ones. ``"lstm"`` and
    ``"gru"`` fix ``cell``; every other ``RecurrentClassifier`` option is open.
    """
    builder = _lookup(name)
    valid = model_options(name)
    for key in sorted(options):
        if key in _fixed(builder):
            raise ConfigError(
                f"model {name!r} fixes {key}={_fixed(builder)[key]!r}; pick the model by its name instead"
            )
        if key not in valid:
            raise ConfigError(f"model {name!r} got unknown option {key!r}; its options are: {', '.join(valid)}")
    return builder(input_dim, num_classes, **options)


def make_checkpoint(name: str, model: nn.Module) -> dict[str, Any]:
    """``{"name", "hparams", "state_dict"}`` of a model built by ``build_model(name, ...)``."""
    hparams = dict(getattr(model, "hparams", None) or {})
    _split_hparams(name, hparams)  # refuse now what load_model could not rebuild later
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    return {"name": name, "hparams": hparams, "state_dict": state_dict}


def load_model(checkpoint: Mapping[str, Any]) -> nn.Module:
    """Rebuild the model of ``make_checkpoint`` (e.g. from ``torch.load(..., weights_only=True)``).

    Returns it in eval mode on the CPU; ``.to(device)`` it where it runs.
    """
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ConfigError(f"not a vidseq model checkpoint: missing {missing} (needs {list(CHECKPOINT_KEYS)})")
    name = checkpoint["name"]
    input_dim, num_classes, options = _split_hparams(name, dict(checkpoint["hparams"]))
    model = build_model(name, input_dim=input_dim, num_classes=num_classes, **options)
    model.load_state_dict(_upgrade_state_dict(model, checkpoint["state_dict"]))
    return model.eval()


_OLD_NORM = re.compile(r"(^|\.)norm\.(weight|bias)$")
_STATS = re.compile(r"(^|\.)input\.(shift|scale)$")


def _upgrade_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint written before stream layouts (its LayerNorm at ``norm.``, no stream statistics)
    loads as it was trained: the LayerNorm moves to ``input.norm.`` and the statistics are the
    identity (those models read motion dims raw)."""
    expected = model.state_dict()
    upgraded = dict(state_dict)
    for key in list(upgraded):
        new = _OLD_NORM.sub(r"\1input.norm.\2", key)
        if new != key and key not in expected and new in expected:
            upgraded[new] = upgraded.pop(key)
    for key, value in expected.items():
        if key not in upgraded and _STATS.search(key):
            upgraded[key] = value
    return upgraded


def _split_hparams(name: str, hparams: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """``(input_dim, num_classes, options)`` for ``build_model(name, ...)`` from ``hparams``.

    Options a checkpoint lacks take their defaults (an option added later stays loadable).
    """
    fixed = _fixed(_lookup(name))
    if "motion_dims" in hparams and "streams" in model_options(name):  # written before stream layouts
        hparams["streams"] = layout_from_motion_dims(int(hparams["input_dim"]), hparams.pop("motion_dims"))
    unknown = sorted(set(hparams) - {"input_dim", "num_classes", *fixed, *model_options(name)})
    missing = sorted({"input_dim", "num_classes"} - set(hparams))
    if unknown or missing:
        raise ConfigError(f"hparams do not fit model {name!r}: missing {missing}, unknown {unknown}")
    for key, value in fixed.items():
        if hparams.get(key, value) != value:
            raise ConfigError(f"hparams of model {name!r} have {key}={hparams[key]!r}, expected {value!r}")
    options = {key: value for key, value in hparams.items() if key not in fixed}
    return options.pop("input_dim"), options.pop("num_classes"), options


def _lookup(name: str) -> Builder:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return MODELS[name]


def _fixed(builder: Builder) -> dict[str, Any]:
    """Options a table entry fixes (the keywords of a ``functools.partial``)."""
    return dict(builder.keywords) if isinstance(builder, functools.partial) else {}
