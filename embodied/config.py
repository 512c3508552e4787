"""Typed configs: dataclasses, overridable from the command line, saved with every run.

``parse_config(MyConfig, ["--lr", "1e-3", "--no-use-gpu"])`` turns each field into a flag
(underscores become dashes), converting by the field's type; booleans get ``--x/--no-x``;
tuples and lists take comma-separated values. Unknown flags are an error that names them.

A field whose type is itself a dataclass is a section: its fields are dotted options
(``wm: WorldModelConfig`` gives ``--wm.target-kl``), so a component's settings are declared once,
in the component's own config, and every one of them is an option, in ``--help`` and in
``config.json`` (nested there). Sweeps, studies and reports name them by the dotted key
(``wm.target_kl``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import io
import json
import math
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence, TypeVar

from embodied.errors import EmbodiedError

T = TypeVar("T")
MAX_SEED = 2**32 - 1  # numpy.random.seed, which seed_everything calls, takes no more


class CommandParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one ``EmbodiedError`` line (argparse prints its whole usage first)."""

    def error(self, message: str):
        raise EmbodiedError(f"{message} (see {self.prog} --help)")


def finite_float(text: str) -> float:
    """A float option: NaN and infinity pass every ``> 0`` check unnoticed (``nan <= 0`` is False), so no option
    takes them."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


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
    if tp is float:
        return finite_float
    if tp in (int, str):
        return tp
    if tp is Path:
        return Path
    return str


def is_section(tp: Any) -> bool:
    """A field type that holds a nested config (its fields become dotted options)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def option_fields(cls: type) -> list[tuple[str, Any, dataclasses.Field, Any]]:
    """``(dotted name, type, field, owning class)`` of every option of config class ``cls``, sections expanded.

    Fields with ``metadata={"option": False}`` are set by their owner (e.g. a section's copy of the agent's
    ``--mode``) and are not options.
    """
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("option") is False:
            continue
        if is_section(hints[f.name]):
            out += [(f"{f.name}.{name}", tp, sub, owner) for name, tp, sub, owner in option_fields(hints[f.name])]
        else:
            out.append((f.name, hints[f.name], f, cls))
    return out


def option_types(cls: type) -> dict[str, Any]:
    """``dotted name -> type`` of every option of ``cls`` (what sweeps and studies check their keys against)."""
    return {name: tp for name, tp, _, _ in option_fields(cls)}


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``"did you mean X, Y?"`` for the names nearest ``name`` (a misspelt option), or ``""``."""
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f"did you mean {', '.join(close)}?" if close else ""


def flag(key: str) -> str:
    """The command-line flag of a (dotted) option name: ``wm.target_kl`` -> ``--wm.target-kl``."""
    return "--" + key.replace("_", "-")


def field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def option_defaults(cls: type) -> dict[str, Any]:
    """``dotted name -> default`` as the class declares it (a section's defaults are its own class's, unless the
    owner's ``default_factory`` builds it otherwise)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("option") is False:
            continue
        if is_section(hints[f.name]):
            default = field_default(f)
            for name in option_types(hints[f.name]):
                value = default
                for part in name.split("."):
                    value = getattr(value, part)
                out[f"{f.name}.{name}"] = value
        else:
            out[f.name] = field_default(f)
    return out


def flatten(data: dict, prefix: str = "") -> dict:
    """A nested config dict (``config.json``) as dotted keys: ``{"wm": {"kl": 3}}`` -> ``{"wm.kl": 3}``."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
    """Shows each option's default, unless its help already says what the default means or the option is
    required (it has none)."""

    def _get_help_string(self, action):
        if "default:" in (action.help or "") or "None:" in (action.help or "") or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser(cls: type, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description=description or (cls.__doc__ or "").strip().split("\n")[0],
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )  # a typo is an error
    presets = getattr(cls, "PRESETS", {})
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help="named settings applied before the other options, which override them: "
            + "; ".join(f"{name}: {describe_preset(values)}" for name, values in sorted(presets.items())),
        )
    defaults = option_defaults(cls)
    groups: dict[str, Any] = {}
    comments: dict[type, dict[str, str]] = {}
    for key, tp, field, owner in option_fields(cls):
        section = key.rpartition(".")[0]
        if section and section not in groups:
            doc = (owner.__doc__ or "").strip().split("\n")[0]
            groups[section] = parser.add_argument_group(f"{section}.* options", doc or None)
        target = groups[section] if section else parser
        default = defaults[key]
        if owner not in comments:
            comments[owner] = field_comments(owner)  # reads the class's source: once per class, not per option
        helptext = (field.metadata.get("help") or comments[owner].get(field.name, "")).replace("%", "%%")
        # plain text, not a %-format for argparse (a '%BC' in a comment made --help crash)
        if isinstance(default, tuple):
            default = ",".join(str(v) for v in default)  # shown as it is typed
        if tp is bool:
            target.add_argument(
                flag(key), dest=key, action=argparse.BooleanOptionalAction, default=default, help=helptext
            )
        else:
            metavar = key.rpartition(".")[2].upper() if section else None
            target.add_argument(
                flag(key), dest=key, type=_converter(tp), default=default, help=helptext, metavar=metavar
            )
    return parser


def describe_preset(values: dict[str, Any]) -> str:
    return " ".join(f"{flag(k)} {v}" for k, v in values.items())


def parse_config(cls: type[T], argv: Sequence[str], prog: str | None = None) -> T:
    """An instance of dataclass ``cls`` from command-line flags; ``--preset NAME`` (a key of ``cls.PRESETS``)
    sets defaults that the other flags override."""
    parser = build_parser(cls, prog=prog)
    presets = getattr(cls, "PRESETS", {})
    if presets:
        first = CommandParser(prog=prog, add_help=False, allow_abbrev=False)
        first.add_argument("--preset", default=None)
        name = first.parse_known_args(list(argv))[0].preset
        if name is not None and name not in presets:
            raise EmbodiedError(f"--preset {name!r}: choose one of {', '.join(sorted(presets))}")
        if name is not None:
            parser.set_defaults(**presets[name])
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        renamed = getattr(cls, "RENAMED", {})
        moved = [
            f"{u.split('=')[0]} is now {flag(renamed[k])}"
            for u in unknown
            if u.startswith("--") and (k := u.split("=")[0][2:].replace("-", "_")) in renamed
        ]
        flags = [o for o in parser._option_string_actions if o.startswith("--")]
        given = [u.split("=")[0] for u in unknown if u.startswith("--")]
        typos = [f"{u}: {m}" for u in given if (m := did_you_mean(u.replace("_", "-"), flags))]
        hint = "; ".join(moved or typos) or "see --help"
        raise EmbodiedError(f"unknown option(s) for {prog or cls.__name__}: {' '.join(unknown)} ({hint})")
    values = vars(namespace)
    values.pop("preset", None)  # what it set is in the values (and so in config.json)
    from embodied.make import TASK_FIELDS, task_name

    for name in TASK_FIELDS:  # checked before anything is created; the printed id is accepted too
        if isinstance(values.get(name), str):
            values[name] = task_name(values[name], "--" + name.replace("_", "-"))
    if isinstance(values.get("seed"), int) and not 0 <= values["seed"] <= MAX_SEED:
        raise EmbodiedError(
            f"--seed must be in [0, {MAX_SEED}], got {values['seed']} (NumPy's global seeding takes 32-bit "
            f"non-negative integers)"
        )
    if isinstance(values.get("threads"), int) and values["threads"] < 0:
        raise EmbodiedError(f"--threads must be >= 0 (0: one per core), got {values['threads']}")
    try:
        return cls(**nest(cls, values))
    except (TypeError, ValueError) as err:
        raise EmbodiedError(f"invalid configuration: {err}") from None


def nest(cls: type, values: dict) -> dict:
    """Keyword arguments of ``cls`` from dotted option values, each section built as its own config
    (from the owner's default for it, so a section default the owner sets differently is kept)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if is_section(hints[f.name]):
            prefix = f.name + "."
            sub = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
            if isinstance(values.get(f.name), dict):  # already nested (config.json)
                sub = {**flatten(values[f.name]), **sub}
            kwargs[f.name] = dataclasses.replace(field_default(f), **nest(hints[f.name], sub))
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return kwargs


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
            "help": "torch CPU threads, at most this machine's CPUs (1: fastest for these agents "
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
    # Keys are option names, dotted for a section's options (``"wm.beta_lr"``).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Options that moved into a section: old name -> dotted name. A config.json written before the move is read
    # (and checked on --resume) under the new names; the old flag is refused with the new one named.
    RENAMED: ClassVar[dict[str, str]] = {}


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
        default=None, metadata={"help": "distractor envs: how strong, in [0, 1] (default: 1)"}
    )
    background: str | None = dataclasses.field(
        default=None, metadata={"help": "distractor envs: noise or shapes (default: noise)"}
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


def check_intervals(config: Any, prefix: str = "", **intervals: str) -> None:
    """``ValueError`` naming the first field of ``config`` outside its interval, written as in mathematics
    (``gamma="[0, 1)"``, ``grad_clip="(0, inf)"``); ``prefix`` names a section (``"wm."``)."""
    for name, interval in intervals.items():
        value = getattr(config, name)
        low, high = (float(x) for x in interval[1:-1].split(","))
        above = low <= value if interval[0] == "[" else low < value
        below = value <= high if interval[-1] == "]" else value < high
        if not (above and below):
            raise ValueError(f"{prefix}{name} must be in {interval}, got {value}")


def check_positive(config: Any, *names: str) -> None:
    """``ValueError`` naming the first of ``names`` that is not > 0 on ``config``."""
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")


def config_to_dict(config: Any) -> dict:
    """The config as ``config.json`` holds it: sections nested, paths as strings, tuples as lists."""

    def convert(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in dataclasses.asdict(config).items()}


def saved_options(cls: type, saved: dict) -> dict:
    """A saved ``config.json`` as dotted keys under today's names (``RENAMED`` applied)."""
    renamed = getattr(cls, "RENAMED", {})
    return {renamed.get(k, k): v for k, v in flatten(saved).items()}


def differing_options(config: Any, saved: dict, allowed: Iterable[str]) -> list[tuple[str, Any, Any]]:
    """``(key, value, saved value)`` for every option of ``config`` that differs from a run's ``saved`` config.json,
    keys in ``allowed`` aside (a key the run lacks counts as its ``LEGACY_DEFAULTS`` value, or is skipped)."""
    current = flatten(json.loads(json.dumps(config_to_dict(config))))  # the form config.json holds (lists, strings)
    saved = saved_options(type(config), saved)
    allowed = set(allowed)
    legacy = getattr(config, "LEGACY_DEFAULTS", {})
    differ = []
    for key, value in current.items():
        if key in allowed or (key not in saved and key not in legacy):
            continue
        was = saved.get(key, legacy.get(key))
        if was != value:
            differ.append((key, value, was))
    return differ


def describe_differences(differ: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{flag(key)} {value!r} (the run has {was!r})" for key, value, was in differ)


def check_resume(config: Any, saved: dict) -> None:
    """``EmbodiedError`` naming every option of ``config`` that differs from the run's ``saved`` config.json
    and that a resume may not change (``RESUMABLE``): resuming with other settings would silently mix two runs."""
    differ = differing_options(config, saved, getattr(config, "RESUMABLE", RunOptions.RESUMABLE))
    if differ:
        raise EmbodiedError(
            "--resume with settings that differ from the run's config.json: "
            + describe_differences(differ)
            + ". Resume with the run's own settings, or start a new run (another --run-name)"
        )


def config_from_dict(cls: type[T], data: dict) -> T:
    """The config a ``config.json`` (or a checkpoint's copy) describes; keys it lacks take today's defaults."""
    values = {}
    types_ = option_types(cls)
    for key, value in saved_options(cls, data).items():
        hint = types_.get(key)
        if hint is None:
            continue
        if typing.get_origin(hint) is tuple:
            value = tuple(value)
        elif hint is Path or (
            typing.get_origin(hint) in (typing.Union, types.UnionType) and Path in typing.get_args(hint)
        ):
            value = None if value is None else Path(value)
        values[key] = value
    return cls(**nest(cls, values))


def save_config(config: Any, path: Path) -> None:
    from embodied.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True))


def parse_command_args(parser: CommandParser, argv: Sequence[str]) -> argparse.Namespace | None:
    """``parser.parse_args`` for a subcommand: None after ``--help`` (bad options are already one ``EmbodiedError``,
    raised by ``CommandParser``)."""
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exit_:
        if exit_.code == 0:
            return None
        raise
