"""Target files: the model service under test, its fault points, feedback and alert sources.

```yaml
name: staging
url: http://127.0.0.1:9000/predict        # where load goes (through the fault proxy)
codec: records                            # records | mlflow | kserve | tfserving
data: eval.parquet                        # rows to replay, unless a scenario names its own
label: approved                           # the true label column, for feedback
feedback: http://127.0.0.1:8000/feedback  # optional: POSTed {"labels": [{"id", "label"}]}
fault_points:
  proxy:   {api: 127.0.0.1:8474, proxy: model}                    # chaosml's fault proxy
  service: {api: 127.0.0.1:8475, proxy: service}                  # the in-service fault point
  network: {api: 127.0.0.1:8476, proxy: model, kind: toxiproxy}   # a real Toxiproxy
alerts:
  - {type: prometheus, url: http://127.0.0.1:9090}
  - {type: alertmanager, url: http://127.0.0.1:9093}
  - {type: webhook, listen: 127.0.0.1:9094}    # chaosml receives Alertmanager's notifications
  - type: probe                                # no Prometheus: read /metrics directly
    url: http://127.0.0.1:8000/metrics
    rules: [{alert: FeatureMissingRateHigh, expr: 'chaosml_model_feature_missing_rate > 0.2', for: 1m}]
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from chaosml.alerts.specs import SOURCE_TYPES, AlertSourceSpec
from chaosml.codecs import CODECS
from chaosml.durations import Duration
from chaosml.errors import SpecError
from chaosml.faults import FAULTS
from chaosml.spec import Address, Loc, Url, one_of, read_yaml, validate_spec

# Toxiproxy's own toxic types: what a real Toxiproxy can act out (from the fault catalogue).
TOXIPROXY_TYPES = tuple(name for name, kind in FAULTS.items() if "toxiproxy" in kind.runs_at)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CodecName = Annotated[str, AfterValidator(lambda v: one_of("codec", v, CODECS))]


class FaultPointSpec(_Model):
    """A Toxiproxy-style control API and the proxy (by name) whose toxics a game day sets."""

    api: Address
    proxy: str = Field(min_length=1)
    kind: Literal["chaosml", "toxiproxy"] = "chaosml"
    token_env: str | None = None  # environment variable holding the bearer token
    lease: Duration = 10.0  # chaosml points drop a toxic not renewed within this

    @property
    def leases(self) -> bool:
        return self.kind == "chaosml"


class Target(_Model):
    name: str = "target"
    url: Url
    codec: CodecName = "records"
    data: Path | None = None
    label: str | None = None
    feedback: Url | None = None
    fault_points: dict[str, FaultPointSpec] = Field(default_factory=dict)
    alerts: list[AlertSourceSpec]

    @field_validator("alerts")
    @classmethod
    def _some(cls, value: list[AlertSourceSpec]) -> list[AlertSourceSpec]:
        if not value:
            raise ValueError(f"expected at least one alert source ({', '.join(SOURCE_TYPES)})")
        return value


class TargetFile:
    def __init__(self, target: Target, path: Path | None, lines: dict[Loc, int]) -> None:
        self.target, self.path, self.lines = target, path, lines

    @property
    def data(self) -> Path | None:
        data = self.target.data
        if data is None or self.path is None:
            return data
        return self.path.parent / data


def load_target(path: str | Path) -> TargetFile:
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError([f"{path}:1: (top level): expected a mapping of target keys"])
    return TargetFile(
        validate_spec(data, Target, path=path, lines=lines, tags=SOURCE_TYPES), path, lines
    )
