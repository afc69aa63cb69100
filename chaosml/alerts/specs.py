"""How a target file names an alert source: one spec model per source type, each building its own
source. Adding a source type is one class here and its entry in ``SOURCE_SPECS``."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaosml.alerts.alertmanager import AlertmanagerAlerts
from chaosml.alerts.base import AlertSource
from chaosml.alerts.probe import MetricProbe, Rule, parse_expr
from chaosml.alerts.prometheus import PrometheusAlerts
from chaosml.alerts.webhook import WebhookAlerts
from chaosml.durations import Duration
from chaosml.spec import Address, Url


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lists_rules: ClassVar[bool] = False  # its source can say which alerting rules exist

    def build(self, time_scale: float = 1.0) -> AlertSource:
        """The source this spec describes (``time_scale``: for rules chaosml evaluates itself)."""
        raise NotImplementedError


class PrometheusSource(SourceSpec):
    type: Literal["prometheus"]
    url: Url
    lists_rules: ClassVar[bool] = True

    def build(self, time_scale: float = 1.0) -> AlertSource:
        return PrometheusAlerts(self.url)


class AlertmanagerSource(SourceSpec):
    type: Literal["alertmanager"]
    url: Url

    def build(self, time_scale: float = 1.0) -> AlertSource:
        return AlertmanagerAlerts(self.url)


class WebhookSource(SourceSpec):
    type: Literal["webhook"]
    listen: Address  # the game day's receiver binds it; Alertmanager sends there
    path: str = "/alerts"

    def build(self, time_scale: float = 1.0) -> AlertSource:
        return WebhookAlerts(listen=self.listen, path=self.path)


class ProbeRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    alert: str = Field(min_length=1)
    expr: str  # metric{label="value"} op number
    for_: Duration = Field(default=0.0, alias="for")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("expr")
    @classmethod
    def _simple(cls, value: str) -> str:
        parse_expr(value)
        return value


class ProbeSource(SourceSpec):
    type: Literal["probe"]
    url: Url  # a /metrics page in Prometheus text format
    rules: list[ProbeRule] = Field(min_length=1)
    interval: Duration = 0.5
    lists_rules: ClassVar[bool] = True

    def build(self, time_scale: float = 1.0) -> AlertSource:
        checks = [
            Rule(r.alert, parse_expr(r.expr), r.for_ * time_scale, dict(r.labels))
            for r in self.rules
        ]
        return MetricProbe(url=self.url, checks=checks)


SOURCE_SPECS = (PrometheusSource, AlertmanagerSource, WebhookSource, ProbeSource)
SOURCE_TYPES: tuple[str, ...] = tuple(
    str(cls.model_fields["type"].annotation.__args__[0])  # type: ignore[union-attr]
    for cls in SOURCE_SPECS
)
AlertSourceSpec = Annotated[
    PrometheusSource | AlertmanagerSource | WebhookSource | ProbeSource,
    Field(discriminator="type"),
]


def make_source(spec: SourceSpec, time_scale: float = 1.0) -> AlertSource:
    return spec.build(time_scale)
