"""The one settings object. Every variable is `PROMPTBLAME_<NAME>`; README lists them all."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from promptblame.ingest.contracts import IngestLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROMPTBLAME_", extra="ignore")

    clickhouse_url: str | None = Field(
        default=None,
        description="ClickHouse server URL (http://user:password@host:8123). "
        "Unset: the embedded chDB store on data_dir.",
    )
    clickhouse_cluster: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="Name of the ClickHouse cluster (remote_servers) to deploy on: migrations"
        " run ON CLUSTER with Replicated engines, tables of events are sharded by (project,"
        " event id) behind Distributed tables. Needs clickhouse_url. Unset: one server.",
    )
    data_dir: Path = Field(
        default=Path("promptblame-data"),
        description="Data directory of the embedded store (one process owns it).",
    )
    database: str = Field(
        default="promptblame",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="ClickHouse database holding promptblame's tables.",
    )
    host: str = Field(default="127.0.0.1", description="Address `promptblame serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `promptblame serve` binds.")
    auth_disabled: bool = Field(
        default=False,
        description="Local single-user mode: no API keys, every request is in default_project. "
        "Refused unless host is a loopback address.",
    )
    default_project: str = Field(
        default="default", description="Project used when auth_disabled is true."
    )
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest request body (after gunzip)."
    )
    max_events_per_request: int = Field(
        default=10_000, ge=1, description="Most events or scores in one request."
    )
    max_text_chars: int = Field(
        default=2_000_000,
        ge=1,
        description="Longest input, output or expected_output of one response (characters);"
        " longer events are rejected naming the field (OTLP spans: cut to this length).",
    )
    max_name_chars: int = Field(
        default=256,
        ge=64,
        description="Longest short string of an event: ids, app, route, prompt/model versions,"
        " tag names (characters).",
    )
    max_tags: int = Field(default=64, ge=0, description="Most tags on one response event.")
    max_tag_value_chars: int = Field(
        default=4096, ge=1, description="Longest tag value (characters)."
    )
    body_read_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Time a client has to send its whole request body; slower ones get 408."
        " Ingest hands the writer only bodies read in full and validated.",
    )
    rate_limit_per_second: float = Field(
        default=500.0,
        ge=0,
        description="Requests per second one API key may make on average (a token bucket per"
        " key); over it the API answers 429 + Retry-After. 0: no limit.",
    )
    rate_limit_burst: int = Field(
        default=1000, ge=1, description="Requests one API key may make at once (bucket size)."
    )
    write_queue_max_rows: int = Field(
        default=200_000,
        ge=1,
        description="Rows waiting for the writer before ingest answers 503 + Retry-After.",
    )
    write_batch_max_rows: int = Field(
        default=100_000, ge=1, description="Most rows the writer puts in one INSERT."
    )
    write_linger_ms: float = Field(
        default=50,
        ge=0,
        le=1000,
        description="Longest the writer waits for requests still being read or decoded, so a"
        " busy service writes fewer, larger parts (never when nothing else is on its way).",
    )
    otlp_processes: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Worker processes that decode and map OTLP exports, so that work runs beside"
        " the event loop and the writer instead of sharing their interpreter; 0 = in the event"
        " loop. Started on the first export.",
    )
    key_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a checked API key is trusted before re-reading."
    )
    scored_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often scores are joined to their responses for analysis"
        " (analysis endpoints also catch up before answering).",
    )
    scoring_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the scoring job runs the evaluators."
    )
    scoring_batch_rows: int = Field(
        default=20_000, ge=1, description="Responses read and scored per step of the scoring job."
    )
    scoring_lookback_days: float = Field(
        default=7.0,
        ge=0,
        description="A new evaluator version scores responses this far back (so shifts have a"
        " baseline); `promptblame score --backfill` reaches further.",
    )
    detection_interval_seconds: float = Field(
        default=300.0, gt=0, description="How often shifts are searched for and attributed."
    )
    detection_window_days: float = Field(
        default=14.0, gt=0, description="Trailing window the detection job analyses."
    )
    detection_bucket_seconds: int = Field(
        default=3600, ge=60, description="Time bucket of the detection job's series."
    )
    detection_min_scores: int = Field(
        default=60,
        ge=1,
        description="Scores a series needs in the window to be analysed (a thin series is"
        " analysed on coarser buckets, up to a day; below this it is listed as not analysed).",
    )
    detection_builtin_metrics: list[Literal["error_rate", "latency_ms", "cost_usd"]] = Field(
        default=["error_rate", "latency_ms"],
        description="Built-in metrics of every response the detection job watches as well as"
        " scores (source `builtin`; lower is better), where the responses carry them.",
    )
    detection_builtin_metrics_by_project: dict[
        str, list[Literal["error_rate", "latency_ms", "cost_usd"]]
    ] = Field(
        default_factory=dict,
        description='Per-project override of DETECTION_BUILTIN_METRICS, JSON: {"acme":'
        ' ["error_rate", "cost_usd"], "demo": []}.',
    )
    detection_processes: int = Field(
        default=0,
        ge=0,
        description="Worker processes the detection job analyses a big project's series in"
        " (0: one per core; 1: in the job's own process). Small projects stay in-process.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where people reach this server; alerts link to its incident reports.",
    )
    report_form_secret: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC key of the report pages' form tokens (CSRF). Empty: a random key per"
        " process, so open forms stop working at a restart; set it when several api processes"
        " serve the pages.",
    )
    judge_base_url: str = Field(
        default="",
        description="OpenAI-compatible endpoint of the LLM judge (https://api.openai.com/v1).",
    )
    judge_api_key: SecretStr = Field(default=SecretStr(""), description="API key of the judge.")
    judge_model: str = Field(default="", description="Judge model when an evaluator names none.")
    judge_timeout_seconds: float = Field(default=30.0, gt=0, description="Per judge call.")
    judge_max_retries: int = Field(
        default=3, ge=0, description="Retries of a judge call on timeouts, 429 and 5xx."
    )
    judge_concurrency: int = Field(default=4, ge=1, description="Judge calls in flight at once.")
    custom_evaluator_modules: str = Field(
        default="",
        description="Comma list of Python packages whose functions `custom` evaluators may name"
        " (empty: custom evaluators are refused).",
    )
    protected_labels: str = Field(
        default="production",
        description="Comma list of prompt labels that accept only a version with a passing gate"
        " result on record (an admin may force a move, with a reason the history keeps).",
    )
    resolve_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long an api process serves a prompt label from its cache. A move is"
        " seen at once by the process that made it, by the others within this time.",
    )
    rollout_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the rollout job looks at running rollouts."
    )
    alert_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the alerting pass sends what incidents call for."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Python logging level."
    )

    def protected(self) -> frozenset[str]:
        return frozenset(x.strip() for x in self.protected_labels.split(",") if x.strip())

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("clickhouse_url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v or None

    @field_validator("clickhouse_cluster")
    @classmethod
    def _cluster_needs_server(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v and not info.data.get("clickhouse_url"):
            raise ValueError(
                "needs PROMPTBLAME_CLICKHOUSE_URL (a node of the cluster); the embedded store"
                " is one node"
            )
        return v or None

    def ingest_limits(self) -> IngestLimits:
        return IngestLimits(
            events=self.max_events_per_request,
            name_chars=self.max_name_chars,
            text_chars=self.max_text_chars,
            tags=self.max_tags,
            tag_value_chars=self.max_tag_value_chars,
        )

    def custom_modules(self) -> list[str]:
        return [m.strip() for m in self.custom_evaluator_modules.split(",") if m.strip()]

    def host_is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (plus overrides); errors name the variable and the reason."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"PROMPTBLAME_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ValueError(f"bad setting: {problems}") from None
