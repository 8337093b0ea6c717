"""Configuration files: where they live, how they are read, and how their schema is checked.

sam2-med's run-time configuration is data, not code. Two kinds of YAML file exist:

* ``sam2_med/configs/intensity.yaml``: the named CT windows and the ``"auto"`` defaults
  (read by :mod:`sam2_med.intensity`);
* ``sam2_med/configs/models/<name>.yaml``: one file per registered model (read by
  :mod:`sam2_med.models.registry`; the schema is described there).

Both ship inside the package. A user registers more models by dropping YAML files of the same
schema into ``<user config folder>/models/``; the folder is ``$SAM2_MED_CONFIG_DIR`` when set,
else ``$XDG_CONFIG_HOME/sam2-med`` (``~/.config/sam2-med``) on Linux,
``~/Library/Application Support/sam2-med`` on macOS and ``%APPDATA%\\sam2-med`` on Windows.

Every schema error is a :class:`~sam2_med.errors.ConfigError` naming the file and the key.
Importing this module imports neither torch nor Qt.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "Section",
    "package_config_dir",
    "package_dir",
    "read_yaml",
    "user_config_dir",
    "user_model_dir",
]


def user_config_dir() -> Path:
    """The user's sam2-med configuration folder (not created by this call).

    Returns
    -------
    pathlib.Path
        ``$SAM2_MED_CONFIG_DIR`` when set, else the platform's user configuration folder:
        ``$XDG_CONFIG_HOME/sam2-med`` or ``~/.config/sam2-med`` (Linux and other Unix),
        ``~/Library/Application Support/sam2-med`` (macOS), ``%APPDATA%\\sam2-med`` (Windows).
    """
    env = os.environ.get("SAM2_MED_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "sam2-med"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "sam2-med"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "sam2-med"


def user_model_dir() -> Path:
    """``<user config folder>/models``: extra model YAML files are read from here."""
    return user_config_dir() / "models"


def package_dir() -> Path:
    """The installed ``sam2_med`` package folder (package data lies under it)."""
    return Path(__file__).resolve().parent


def package_config_dir() -> Path:
    """The configuration shipped inside the package (``sam2_med/configs``)."""
    return package_dir() / "configs"


def read_yaml(file: Path) -> Mapping[str, Any]:
    """Read a YAML file whose top level must be a mapping, safely (no Python objects).

    Parameters
    ----------
    file
        The YAML file.

    Returns
    -------
    Mapping
        The parsed document.

    Raises
    ------
    ConfigError
        The file cannot be read, is not YAML (line and column named), or its top level is not
        a mapping of keys to values.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", file) from None
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}", file) from None
    if not isinstance(doc, Mapping):
        raise ConfigError(
            f"the file must hold a mapping of keys to values, not {type(doc).__name__}", file
        )
    return doc


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


class Section:
    """A mapping from a config file, read key by key with errors that name the file and key.

    Each accessor removes the key it read; :meth:`done` then refuses any key left over
    (a misspelt key is an error, never silently ignored).

    Parameters
    ----------
    data
        The mapping (a YAML document or a nested mapping of one).
    file
        The YAML file, for messages.
    prefix
        Dotted path of ``data`` inside the file (``""`` at the top level).
    """

    def __init__(self, data: Mapping[str, Any], file: Path, prefix: str = "") -> None:
        self._data = dict(data)
        self.file = file
        self.prefix = prefix
        for key in self._data:
            if not isinstance(key, str):
                raise self.error(f"keys must be strings, got {key!r}", str(key))

    def key(self, name: str) -> str:
        """The dotted path of ``name`` in the file."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, message: str, name: str | None = None) -> ConfigError:
        """A :class:`ConfigError` about ``name`` in this section (or the section itself)."""
        return ConfigError(message, self.file, self.key(name) if name else self.prefix or None)

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def _pop(self, name: str, required: bool) -> Any:
        if name not in self._data or self._data[name] is None:
            self._data.pop(name, None)
            if required:
                near = difflib.get_close_matches(name, [str(k) for k in self._data], n=1)
                hint = f" (is {near[0]!r} a misspelling of it?)" if near else ""
                raise self.error(f"required key missing{hint}", name)
            return None
        return self._data.pop(name)

    def value(self, name: str, kind: type, *, required: bool = True, default: Any = None) -> Any:
        """A scalar of type ``kind`` (``str``, ``int``, ``float`` or ``bool``).

        ``int`` refuses booleans and floats; ``float`` accepts integers; ``str`` must not be
        empty. A missing or null optional key gives ``default``.
        """
        v = self._pop(name, required)
        if v is None:
            return default
        ok = (
            isinstance(v, bool)
            if kind is bool
            else isinstance(v, (int, float)) and not isinstance(v, bool)
            if kind is float
            else isinstance(v, kind) and not isinstance(v, bool)
        )
        if not ok:
            raise self.error(f"must be {_TYPE_NAMES[kind]}, got {v!r}", name)
        if kind is str and not v.strip():
            raise self.error("must not be empty", name)
        return float(v) if kind is float else v

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        """A string from ``choices``; ``default`` when missing."""
        v = self.value(name, str, required=False, default=default)
        if v not in choices:
            raise self.error(f"must be one of {', '.join(map(repr, choices))}, got {v!r}", name)
        return v

    def strings(self, name: str) -> tuple[str, ...]:
        """A list of non-empty strings (``()`` when missing)."""
        v = self._pop(name, required=False)
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(s, str) and s.strip() for s in v):
            raise self.error(f"must be a list of non-empty strings, got {v!r}", name)
        return tuple(v)

    def section(self, name: str, *, required: bool = True) -> Section | None:
        """A nested mapping, as a :class:`Section` (None when missing and optional)."""
        v = self._pop(name, required)
        if v is None:
            return None
        if not isinstance(v, Mapping):
            raise self.error(f"must be a mapping of keys to values, got {v!r}", name)
        return Section(v, self.file, self.key(name))

    def sections(self, name: str) -> list[Section]:
        """A list of mappings (``[]`` when missing), each as a :class:`Section`."""
        v = self._pop(name, required=False)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(s, Mapping) for s in v):
            raise self.error(f"must be a list of mappings, got {v!r}", name)
        return [Section(s, self.file, f"{self.key(name)}[{i}]") for i, s in enumerate(v)]

    def raw(self, name: str) -> Any:
        """The value as parsed (None when missing), for keys with their own validation."""
        return self._pop(name, required=False)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Take every remaining key (for free-form mappings such as the preset table)."""
        while self._data:
            name = next(iter(self._data))
            yield name, self._data.pop(name)

    def done(self) -> None:
        """Refuse keys nobody read (misspelt or unknown), naming them."""
        if self._data:
            name = sorted(self._data)[0]
            raise self.error("unknown key (misspelt, or not part of this schema)", name)
