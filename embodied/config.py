"""Typed configs: dataclasses, overridable from the command line, saved with every run.

``parse_config(MyConfig, ["--lr", "1e-3", "--no-use-gpu"])`` turns each field into a flag
(underscores become dashes), converting by the field's type; booleans get ``--x/--no-x``;
tuples and lists take comma-separated values. Unknown flags are an error that names them.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Sequence, TypeVar

from embodied.errors import EmbodiedError

T = TypeVar("T")


def _converter(tp: Any):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        base = _converter(inner[0])
        return lambda s: None if s.lower() in ("none", "null") else base(s)
    if origin in (tuple, list):
        elem = _converter(args[0]) if args else str
        return lambda s: origin(elem(x) for x in s.split(",") if x != "")
    if tp in (int, float, str):
        return tp
    if tp is Path:
        return Path
    return str


def field_comments(cls: type) -> dict[str, str]:
    """``name -> comment`` for fields written ``name: type = default  # comment`` in ``cls`` and its bases.

    Field comments are the help text of each option (as tyro and simple-parsing read them), so
    a config's documentation sits beside its defaults.
    """
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        pending_name = None
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and token.start[1] == 4 and pending_name is None:
                pending_name = (token.string, token.start[0])
            elif token.type == tokenize.COMMENT and pending_name and token.start[0] == pending_name[1]:
                comments[pending_name[0]] = token.string.lstrip("#").strip()
            if token.type in (tokenize.NEWLINE, tokenize.NL):
                pending_name = None
    return comments


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says what the default means."""

    def _get_help_string(self, action):
        if "default:" in (action.help or "") or "None:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(cls: type, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (cls.__doc__ or "").strip().split("\n")[0],
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )  # a typo is an error
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    presets = getattr(cls, "PRESETS", {})
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help="named settings applied before the other options, which override them: "
            + "; ".join(f"{name}: {describe_preset(values)}" for name, values in sorted(presets.items())),
        )
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        helptext = (field.metadata.get("help") or comments.get(field.name, "")).replace("%", "%%")  # plain text, not
        # a %-format for argparse (a '%BC' in a comment made --help crash)
        if isinstance(default, tuple):
            default = ",".join(str(v) for v in default)  # shown as it is typed
        if tp is bool:
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=default, help=helptext
            )
        else:
            parser.add_argument(flag, dest=field.name, type=_converter(tp), default=default, help=helptext)
    return parser


def describe_preset(values: dict[str, Any]) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())


def parse_config(cls: type[T], argv: Sequence[str], prog: str | None = None) -> T:
    """An instance of dataclass ``cls`` from command-line flags; ``--preset NAME`` (a key of ``cls.PRESETS``)
    sets defaults that the other flags override."""
    parser = build_parser(cls, prog=prog)
    presets = getattr(cls, "PRESETS", {})
    if presets:
        first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        first.add_argument("--preset", default=None)
        name = first.parse_known_args(list(argv))[0].preset
        if name is not None and name not in presets:
            raise EmbodiedError(f"--preset {name!r}: choose one of {', '.join(sorted(presets))}")
        if name is not None:
            parser.set_defaults(**presets[name])
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise EmbodiedError(f"unknown option(s) for {prog or cls.__name__}: {' '.join(unknown)} (see --help)")
    values = vars(namespace)
    values.pop("preset", None)  # what it set is in the values (and so in config.json)
    from embodied.make import TASK_FIELDS, task_name

    for name in TASK_FIELDS:  # checked before anything is created; the printed id is accepted too
        if isinstance(values.get(name), str):
            values[name] = task_name(values[name], "--" + name.replace("_", "-"))
    if isinstance(values.get("seed"), int) and values["seed"] < 0:
        raise EmbodiedError(f"--seed must be >= 0, got {values['seed']} (NumPy's seeding takes non-negative integers)")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise EmbodiedError(f"invalid configuration: {err}") from None


@dataclasses.dataclass
class RunOptions:
    """Options every training run has: where it runs and where it writes."""

    device: str = dataclasses.field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda, cuda:N"})
    seed: int = 0  # random seed (env resets, networks, sampling)
    run_dir: Path = Path("runs")  # directory that holds the run directories
    run_name: str | None = dataclasses.field(
        default=None, metadata={"help": "run directory name under --run-dir (None: derived from agent, task and seed)"}
    )
    resume: bool = dataclasses.field(default=False, metadata={"help": "continue the run from its last checkpoint"})
    video: bool = dataclasses.field(default=True, metadata={"help": "export evaluation videos"})
    threads: int = dataclasses.field(
        default=1,
        metadata={
            "help": "torch CPU threads (1: fastest for these agents "
            "on a CPU shared with other work, measured; 0: one per core); "
            "embodied sweep sets its CPU share"
        },
    )

    # Options a --resume may change (where and how fast it runs, how long, how often it reports); every other
    # option shapes the result and must be the run's own. Agents add their budget and reporting options.
    RESUMABLE: ClassVar[tuple[str, ...]] = ("device", "run_dir", "run_name", "resume", "video", "threads")
    # Values a run's config.json without an option (written before the option existed) ran with, where that
    # differs from the option's default today; options missing from config.json and not named are not checked.
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Named settings (``--preset NAME``), DreamerV3's idea: one definition of a scale that scripts and studies share.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}


@dataclasses.dataclass
class DistractionOptions:
    """The keyword arguments of the distractor ids (``envs.distractions``), as options; ``None``: the env's default."""

    axes: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "distractor envs: the axes that vary, comma-separated from background,color,camera,lighting "
            "(default: background)"
        },
    )
    difficulty: float | None = dataclasses.field(
        default=None, metadata={"help": "distractor envs: how strong, in [0, 1] (default 1)"}
    )
    background: str | None = dataclasses.field(
        default=None, metadata={"help": "distractor envs: noise or shapes (default noise)"}
    )


def distraction_options(cfg: Any) -> dict:
    """The distractor options a config sets, as env kwargs (an env without them refuses them)."""
    names = [f.name for f in dataclasses.fields(DistractionOptions)]
    return {k: getattr(cfg, k) for k in names if getattr(cfg, k, None) is not None}


def check_distraction_options(cfg: Any, variant: str) -> None:
    """Distractor options checked with the config, before anything is created: they need the distractor
    variant, and their values must be ones the env accepts (``axes`` is written back in canonical order)."""
    from envs.distractions import check_options

    options = distraction_options(cfg)
    if options and variant != "distractor":
        raise ValueError(f"--{'/--'.join(options)} apply to the distractor variant, not {variant!r}")
    axes, _, _ = check_options(options.get("axes"), options.get("difficulty"), options.get("background"))
    if "axes" in options:
        cfg.axes = ",".join(axes)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``ValueError`` naming the option unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_positive(config: Any, *names: str) -> None:
    """``ValueError`` naming the first of ``names`` that is not > 0 on ``config``."""
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")


def config_to_dict(config: Any) -> dict:
    def convert(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return list(value)
        return value

    return {k: convert(v) for k, v in dataclasses.asdict(config).items()}


def check_resume(config: Any, saved: dict) -> None:
    """``EmbodiedError`` naming every option of ``config`` that differs from the run's ``saved`` config.json
    and that a resume may not change (``RESUMABLE``): resuming with other settings would silently mix two runs."""
    current = json.loads(json.dumps(config_to_dict(config)))  # the form config.json holds (lists, strings)
    allowed = set(getattr(config, "RESUMABLE", RunOptions.RESUMABLE))
    legacy = getattr(config, "LEGACY_DEFAULTS", {})
    differ = []
    for key, value in current.items():
        if key in allowed or (key not in saved and key not in legacy):
            continue
        was = saved.get(key, legacy.get(key))
        if was != value:
            differ.append(f"--{key.replace('_', '-')} {value!r} (the run has {was!r})")
    if differ:
        raise EmbodiedError(
            "--resume with settings that differ from the run's config.json: "
            + "; ".join(differ)
            + ". Resume with the run's own settings, or start a new run (another --run-name)"
        )


def config_from_dict(cls: type[T], data: dict) -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            value, hint = data[field.name], hints[field.name]
            if typing.get_origin(hint) is tuple:
                value = tuple(value)
            elif hint is Path or (
                typing.get_origin(hint) in (typing.Union, types.UnionType) and Path in typing.get_args(hint)
            ):
                value = None if value is None else Path(value)
            kwargs[field.name] = value
    return cls(**kwargs)


def save_config(config: Any, path: Path) -> None:
    from embodied.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True))


def parse_command_args(parser: argparse.ArgumentParser, argv: Sequence[str], command: str) -> argparse.Namespace | None:
    """``parser.parse_args`` for a subcommand: None after ``--help``; bad options become one ``EmbodiedError``."""
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exit_:
        if exit_.code == 0:
            return None
        raise EmbodiedError(f"bad {command} options (see {command} --help)") from None
