"""Project configuration: ``chaosml.yaml``, or ``[tool.chaosml]`` in ``pyproject.toml``.

```yaml
versions:
  v1: models/v1.skops                   # an artifact (joblib/skops) ...
  v2: {predictions: preds/v2.parquet}   # ... or a predictions file
data: data/eval.parquet
label: approved
cache_dir: .chaosml/cache
```
Relative paths are relative to the file they are written in.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from chaosml.errors import ConfigError, SpecError
from chaosml.spec import read_yaml, validate_spec

CONFIG_FILE = "chaosml.yaml"


class VersionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: Path | None = None
    predictions: Path | None = None
    endpoint: str | None = None  # a served model: http://host:port/predict
    codec: str = "records"  # how the endpoint is spoken to

    @model_validator(mode="after")
    def _one_source(self) -> VersionEntry:
        sources = [self.artifact, self.predictions, self.endpoint]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                "a version needs exactly one of `artifact`, `predictions` or `endpoint`"
            )
        return self

    @property
    def path(self) -> Path:
        path = self.artifact or self.predictions
        assert path is not None, "an endpoint has no path"
        return path


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    versions: dict[str, Path | VersionEntry] = Field(default_factory=dict)
    data: Path | None = None
    label: str | None = None
    cache_dir: Path | None = Path(".chaosml/cache")

    _root: Path = PrivateAttr(default=Path("."))

    @property
    def root(self) -> Path:
        """The folder relative paths are resolved against: the config file's own."""
        return self._root

    def version(self, name: str) -> VersionEntry | None:
        entry = self.versions.get(name)
        if entry is None:
            return None
        if isinstance(entry, Path):
            return (
                VersionEntry(artifact=entry)
                if _is_artifact(entry)
                else VersionEntry(predictions=entry)
            )
        return entry

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.root / path


def _is_artifact(path: Path) -> bool:
    return path.suffix.lower() not in (".parquet", ".pq", ".csv", ".tsv")


def load_config(path: str | Path | None = None, *, cwd: Path | None = None) -> ProjectConfig:
    """Read the project config: ``path`` if given, else ``chaosml.yaml`` or ``pyproject.toml`` in
    ``cwd``; an empty config if neither has one."""
    cwd = cwd or Path.cwd()
    if path is not None:
        return _from_yaml(Path(path))
    if (cwd / CONFIG_FILE).is_file():
        return _from_yaml(cwd / CONFIG_FILE)
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        try:
            table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{pyproject}: cannot read: {exc}") from exc
        section = table.get("tool", {}).get("chaosml")
        if section is not None:
            try:
                config = validate_spec(section, ProjectConfig, path=pyproject, lines={})
            except SpecError as exc:
                message = "; ".join(p.replace(f"{pyproject}:1: ", "") for p in exc.problems)
                raise ConfigError(f"{pyproject}: [tool.chaosml] {message}") from exc
            return _rooted(config, cwd)
    return _rooted(ProjectConfig(), cwd)


def _from_yaml(path: Path) -> ProjectConfig:
    try:
        data, lines = read_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SpecError([f"{path}:1: expected a mapping"])
        config = validate_spec(data, ProjectConfig, path=path, lines=lines)
    except SpecError as exc:
        raise ConfigError("\n".join(exc.problems)) from exc
    return _rooted(config, path.parent)


def _rooted(config: ProjectConfig, root: Path) -> ProjectConfig:
    config._root = root
    return config
