"""Model kinds: the `KIND:ARG[:ARG...]` specs that `vladva eval`, `vladva index` and `vladva serve` accept.

Each kind is registered by the module that owns its model class, in one line:

    register_model_kind("clip", lambda model_dir: ClipBaselineEmbedder.from_pretrained(model_dir),
                        "the CLIP-style baseline", usage="clip:DIR")

The builder gets the spec's `:`-separated arguments as positional strings and returns an
`Embedder`. Kinds are found through the `vladva.model_kinds` entry-point group (pyproject.toml):
an entry point's name is the kind, its value the module whose import registers it. So a kind's
code (torch, transformers) is imported only when a spec names it, this module never imports
the layers above it, and another installed package adds kinds the same way. `python:` is
registered here. Entry points are read from the installed package's metadata: after adding one,
reinstall (`pip install -e .`).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vladva.embedder import Embedder

ENTRY_POINT_GROUP = "vladva.model_kinds"


class ModelSpecError(ValueError):
    """A model spec that cannot be parsed or loaded; the message names the spec."""


def existing_paths(args: Sequence[str]) -> list[Path]:
    """The arguments that name an existing file or folder: a kind's model folders by default."""
    return [Path(a) for a in args if Path(a).exists()]


@dataclass(frozen=True)
class ModelKind:
    """One spec prefix. `build(*args)` -> `Embedder`; `folders(args)` -> the model folders whose
    files identify the model (the embedding cache key) and may hold its compute records;
    `tokenizer(*args)` -> the model's tokenizer without loading its weights (None: build the model
    and take its `tokenizer` attribute)."""

    prefix: str
    build: Callable[..., Embedder]
    help: str
    usage: str
    folders: Callable[[Sequence[str]], list[Path]] = existing_paths
    tokenizer: Callable[..., object] | None = None

    def check_arguments(self, args: Sequence[str]) -> None:
        """Raise `ModelSpecError("expected <usage>")` when `build` cannot take `args`."""
        try:
            signature = inspect.signature(self.build)
        except (TypeError, ValueError):  # a builtin without a signature: let the call decide
            return
        try:
            signature.bind(*args)
        except TypeError:
            raise ModelSpecError(f"expected {self.usage}") from None


_KINDS: dict[str, ModelKind] = {}


def _usage_from_signature(prefix: str, build: Callable) -> str:
    """`def build(base_dir, weights_dir=None)` -> `prefix:BASE_DIR[:WEIGHTS_DIR]`."""
    try:
        params = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):
        return f"{prefix}:ARGS"
    usage = prefix
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            usage += f":{p.name.upper()}" if p.default is p.empty else f"[:{p.name.upper()}]"
    return usage


def register_model_kind(
    prefix: str,
    builder: Callable[..., Embedder],
    help: str,
    usage: str | None = None,
    folders: Callable[[Sequence[str]], list[Path]] = existing_paths,
    replace: bool = False,
    tokenizer: Callable[..., object] | None = None,
) -> ModelKind:
    """Make `prefix:ARGS` specs build `builder(*ARGS)`.

    Args:
        prefix: the kind, e.g. `"clip"` (no `:` or `=`).
        builder: called with the spec's arguments as strings; returns an `Embedder`.
        help: one line for listings and docs.
        usage: the spec's form for error messages (default: from the builder's parameter names).
        folders: the model folders among the arguments (default: those that exist on disk).
        replace: allow replacing a kind registered by another builder (tests, plugins).
        tokenizer: called with the spec's arguments, returns the model's tokenizer cheaply (for
            `vladva check-manifest --model`); default: build the model and read its `tokenizer`.
    """
    if not prefix or any(c in prefix for c in ":= "):
        raise ValueError(f"model kind {prefix!r}: a prefix is a non-empty word without ':', '=' or spaces")
    kind = ModelKind(prefix, builder, help, usage or _usage_from_signature(prefix, builder), folders, tokenizer)
    old = _KINDS.get(prefix)
    # The same builder defined at the same place (a module imported again) may register again.
    if old is not None and _origin(old.build) != _origin(builder) and not replace:
        raise ValueError(f"model kind {prefix!r} is already registered (by {getattr(old.build, '__module__', '?')})")
    _KINDS[prefix] = kind
    return kind


def _origin(fn: Callable) -> object:
    """Where `fn` is defined (file, line), or the object itself when that is unknown."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else fn


def _entry_points(name: str | None = None):
    found = entry_points(group=ENTRY_POINT_GROUP)
    return [ep for ep in found if name is None or ep.name == name]


def model_kind(prefix: str) -> ModelKind | None:
    """The kind registered for `prefix`, importing its entry-point module on first use; None if unknown."""
    if prefix not in _KINDS:
        for ep in _entry_points(prefix):
            try:
                ep.load()
            except ImportError as e:
                raise ModelSpecError(f"model kind {prefix!r}: cannot import {ep.value} ({e})") from None
            if prefix not in _KINDS:
                raise ModelSpecError(
                    f"model kind {prefix!r}: the entry point's module {ep.value} registered no such kind"
                )
    return _KINDS.get(prefix)


def model_kind_names() -> list[str]:
    """Every known prefix (registered or declared by an entry point), sorted; imports nothing."""
    return sorted(set(_KINDS) | {ep.name for ep in _entry_points()})


# Bare words that stand for a whole spec. `default` is the shipped base LVLM, zero-shot (the name
# `default` itself is resolved to its folder by `vladva.pretrained.resolve_base`, so
# `vladva:default:RUN` and `zeroshot:default` work as any folder would).
SPEC_ALIASES = {"default": "zeroshot:default"}


def parse_model_spec(spec: str) -> tuple[str, list[str]]:
    """The one parser of model specs: `KIND:ARG[:ARG...]` (or a bare alias such as `default`) ->
    `(kind, [args])`. Raises `ModelSpecError` naming the spec and the known forms when the kind is
    unknown."""
    spec = spec.strip()
    spec = SPEC_ALIASES.get(spec, spec)
    prefix, sep, rest = spec.partition(":")
    kind = model_kind(prefix) if sep else None
    if kind is None:
        known = ", ".join([*(k + ":..." for k in model_kind_names()), *SPEC_ALIASES])
        hint = (
            "" if _entry_points() else " (no kinds are declared by entry points: is vladva installed? pip install -e .)"
        )
        raise ModelSpecError(f"model spec {spec!r}: expected one of {known}{hint}")
    return prefix, rest.split(":") if rest else []


def _map_path_args(spec: str, candidate: Callable[[str], str], keep: Callable[[str, str], bool]) -> str:
    """`spec` with each argument that the kind takes as a path replaced by `candidate(arg)` when
    `keep(arg, candidate(arg))`; the kind's `folders` decides which arguments are paths (so module
    names of `python:` specs or `default` are never touched)."""
    try:
        prefix, args = parse_model_spec(spec)
    except ModelSpecError:
        return spec
    kind = _KINDS[prefix]
    new = [candidate(a) for a in args]
    paths = {Path(p) for p in kind.folders(args)} | {Path(p) for p in kind.folders(new)}
    out = [n if keep(a, n) and (Path(a) in paths or Path(n) in paths) else a for a, n in zip(args, new)]
    return ":".join([prefix, *out])


def portable_spec(spec: str, home: Path | str) -> str:
    """`spec` as a file in folder `home` (an index's index.json) should store it: every path argument
    that exists made relative to `home` when it lies inside `home`, absolute otherwise, so the
    file reads the same from any working directory (`resolve_spec` reverses it)."""
    home = Path(home).resolve()

    def candidate(arg: str) -> str:
        path = Path(arg).resolve()
        return path.relative_to(home).as_posix() if path.is_relative_to(home) else str(path)

    return _map_path_args(spec, candidate, lambda arg, new: Path(arg).exists())


def resolve_spec(spec: str, home: Path | str) -> str:
    """A spec read from a file in folder `home`: path arguments relative to `home` (as
    `portable_spec` writes them) made absolute. A relative argument not found under `home` is left
    as it is (specs written before paths were stored this way are relative to the working folder)."""
    home = Path(home).resolve()
    return _map_path_args(
        spec,
        lambda arg: arg if Path(arg).is_absolute() else str(home / arg),
        lambda arg, new: new != arg and Path(new).exists(),
    )


def build_embedder(spec: str) -> tuple[Embedder, list[Path]]:
    """`KIND:ARG[:ARG...]` or `default` -> (the embedder, its model folders). Raises
    `ModelSpecError` naming the spec."""
    prefix, args = parse_model_spec(spec)
    kind = _KINDS[prefix]
    try:
        kind.check_arguments(args)
        embedder = kind.build(*args)
    except ModelSpecError as e:
        raise ModelSpecError(f"model spec {spec!r}: {e}") from None
    except ImportError as e:
        raise ModelSpecError(f"model spec {spec!r}: cannot import the model code ({e})") from None
    for method in ("encode_images", "encode_texts"):
        if not callable(getattr(embedder, method, None)):
            raise ModelSpecError(f"model spec {spec!r}: the loaded object has no {method}() (not an Embedder)")
    return embedder, kind.folders(args)


def load_tokenizer(spec: str) -> object | None:
    """The tokenizer the model `spec` reads texts with (the kind's `tokenizer` hook, else the built
    embedder's `tokenizer` attribute); None for a model without one."""
    prefix, args = parse_model_spec(spec)
    kind = _KINDS[prefix]
    if kind.tokenizer is not None:
        try:
            kind.check_arguments(args)
            return kind.tokenizer(*args)
        except ModelSpecError as e:
            raise ModelSpecError(f"model spec {spec!r}: {e}") from None
    return getattr(build_embedder(spec)[0], "tokenizer", None)


def load_embedder(spec: str) -> Embedder:
    """Just the `Embedder` for `spec`."""
    return build_embedder(spec)[0]


def _python_factory(module: str, attr: str, arg: str | None = None) -> Embedder:
    """`ATTR(ARG)` or `ATTR()` from an importable module; the current folder is searched too, as
    `python -m` would."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(module), attr)
    except AttributeError:
        raise ModelSpecError(f"module {module!r} has no attribute {attr!r}") from None
    return factory(arg) if arg is not None else factory()


register_model_kind(
    "python",
    _python_factory,
    "any factory returning an Embedder",
    usage="python:MODULE:ATTR[:ARG]",
    folders=lambda args: existing_paths(args[2:]),  # MODULE and ATTR are names, not model folders
)
