"""Settings: one validated model read from defaults, a YAML file, `WATCHDOG_*` variables and flags.

Precedence, highest first: explicit overrides (CLI flags) > environment > `--config` file >
embedded defaults. Unknown keys are errors, and every error names the path of the field.
"""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from watchdog.detection import DetectorSettings
from watchdog.errors import ConfigError

_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "watchdog_config_file", default=None
)


class Section(BaseModel):
    """Base of every settings section: strict keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    """The one HTTP listener: OTLP intake, API and dashboard."""

    host: str = Field("127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(4318, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Largest OTLP request accepted, measured after decompression (413 above).",
    )
    public_url: str | None = Field(
        None, description="Base URL people use to reach the dashboard (links in alerts)."
    )


class StorageSettings(Section):
    """Where the DuckDB files live and how DuckDB may use memory and threads."""

    data_dir: Path = Field(
        Path("watchdog-data"),
        description="Directory of the DuckDB files (watchdog.duckdb and watchdog.twin.duckdb).",
    )
    memory_limit: str = Field(
        "384MB",
        description="DuckDB memory limit: its cache of the files' blocks and the working memory "
        "of queries (larger ones spill to disk). The cache fills up to the limit as the files "
        "grow, so it sets the daemon's steady memory: at 1GB a 4.8M-span ingest run peaked "
        "at 1,137 MiB RSS; 256MB ingested at the same speed (benchmarks/ingest.py).",
    )
    threads: int = Field(
        1,
        ge=1,
        description="DuckDB worker threads. One keeps ingest cheapest on a small machine "
        "(a second thread costs more CPU per insert than it saves); raise it for heavy SQL.",
    )
    checkpoint_threshold: str = Field(
        "96MB",
        pattern=r"(?i)^\s*\d+(\.\d+)?\s*([kmgt]i?b|b|bytes)\s*$",
        description="WAL size at which the file that takes span inserts is checkpointed (its "
        "WAL folded into it, about one second per 100 MB here) while the inserts go to the "
        "other of the two span files. The rows since a file's last checkpoint stay in "
        "memory: more means fewer checkpoints and more memory. A checkpoint costs least per "
        "span when it covers a whole row group (122,880 spans): for spans that carry prompts and outputs (2 KB and more), 256MB "
        "costs a third of the CPU of 96MB (benchmarks/checkpoint_cost.py).",
    )


class IngestSettings(Section):
    """The bounded queue between the receiver and the single writer."""

    max_queued_spans: int = Field(
        200_000, gt=0, description="Spans waiting for commit before intake answers 503."
    )
    max_batch_spans: int = Field(
        50_000, gt=0, description="Most spans the writer commits in one transaction."
    )
    ack_timeout_s: float = Field(
        30.0, gt=0, description="How long a request waits for its commit before answering 503."
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with a 503 when full.")
    decode_workers: int = Field(
        0,
        ge=0,
        description="Processes that decode OTLP bodies off the event loop (0: decode inline).",
    )
    shutdown_drain_s: float = Field(
        20.0, gt=0, description="Longest SIGTERM waits for queued spans to commit."
    )

    @field_validator("max_batch_spans")
    @classmethod
    def _batch_fits_queue(cls, v: int, info: Any) -> int:
        queued = info.data.get("max_queued_spans")
        if queued is not None and v > queued:
            raise ValueError("must not exceed ingest.max_queued_spans")
        return v


class SqlSettings(Section):
    """Limits of the read-only SQL endpoint."""

    time_limit_ms: int = Field(5000, gt=0, description="Deadline of one query.")
    max_rows: int = Field(10_000, gt=0, description="Rows returned before `truncated` is set.")


class PriceSettings(Section):
    """Model prices: genai-prices plus a local override file."""

    overrides_file: Path | None = Field(
        None,
        description="YAML or JSON file of custom model prices (USD per million tokens).",
    )


class BudgetCaps(Section):
    """Spend caps in USD; None means no cap at that level."""

    per_run_usd: float | None = Field(None, gt=0, description="Cap per run (one trace).")
    per_session_usd: float | None = Field(None, gt=0, description="Cap per session.")
    per_agent_day_usd: float | None = Field(None, gt=0, description="Cap per agent per UTC day.")


class BudgetSettings(BudgetCaps):
    """Spend caps shared by the spend detector and the guard's reservations."""

    total_day_usd: float | None = Field(
        None, gt=0, description="Cap on all agents together per UTC day."
    )
    warn_fractions: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 1.0],
        description="Fractions of a cap at which the spend detector warns (once per period).",
    )
    agents: dict[str, BudgetCaps] = Field(
        default_factory=dict, description="Per-agent caps that replace the defaults above."
    )

    @field_validator("warn_fractions")
    @classmethod
    def _fractions_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in v):
            raise ValueError("every fraction must be in (0, 1]")
        return sorted(set(v))

    def caps_for(self, agent: str) -> BudgetCaps:
        """The caps that apply to `agent` (its override, else the defaults)."""
        return self.agents.get(agent, self)


class HoldRule(Section):
    """Hold a matching tool call for a person to cancel before it runs."""

    tool: str = Field(..., min_length=1, description="Glob over the tool name (fnmatch).")
    agent: str = Field("*", description="Glob over the agent name.")
    args: dict[str, str] = Field(
        default_factory=dict,
        description="Argument name → glob over its value's text; every one must match.",
    )
    delay_s: float | None = Field(
        None, gt=0, description="Hold window; default enforcement.hold_delay_s."
    )


PolicyAction = Literal["none", "warn", "pause", "deny", "kill"]
_DEFAULT_SEVERITY_ACTIONS: dict[Literal["info", "warn", "pause", "kill"], PolicyAction] = {
    "info": "none",
    "warn": "warn",
    "pause": "pause",
    "kill": "kill",
}


class PolicyRule(Section):
    """How alerts of one detector rule become verdicts (overrides the severity default)."""

    action: PolicyAction | None = Field(
        None, description="Verdict to set; none = the severity default."
    )
    dry_run: bool = Field(False, description="Audit what would be set, set nothing.")
    scope: Literal["auto", "agent", "session", "trace"] | None = Field(
        None, description="Scope the verdict applies to; none = the policy's scope."
    )
    ttl_s: float | None = Field(None, gt=0, description="Expiry of pause/deny/warn verdicts.")


class PolicySettings(Section):
    """Alerts → verdicts. Default: info → none, warn → warn, pause → pause, kill → kill."""

    severity_actions: dict[Literal["info", "warn", "pause", "kill"], PolicyAction] = Field(
        default_factory=lambda: dict(_DEFAULT_SEVERITY_ACTIONS),
        description="Verdict per alert severity (severities left out keep the default).",
    )
    scope: Literal["auto", "agent", "session", "trace"] = Field(
        "auto", description="auto = the alert's session, else its trace, else its agent."
    )
    dry_run: bool = Field(False, description="Audit every verdict the policy would set, set none.")
    rules: dict[str, PolicyRule] = Field(
        default_factory=dict,
        description="Per-rule overrides keyed by `detector.rule` or by `rule` alone.",
    )


class WebhookSettings(Section):
    """Signed JSON POST to the agent's control URL on every verdict change."""

    url: str | None = Field(None, description="Control URL for every agent (none: off).")
    agents: dict[str, str] = Field(
        default_factory=dict, description="Per-agent control URLs (override `url`)."
    )
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of the signature.")
    timeout_s: float = Field(2.0, gt=0, description="Deadline of one delivery attempt.")
    max_attempts: int = Field(6, ge=1, le=20, description="Attempts before giving up.")
    backoff_initial_s: float = Field(0.5, gt=0, description="First retry delay (doubles).")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay.")
    queue_size: int = Field(1000, gt=0, description="Deliveries waiting before new ones drop.")

    @model_validator(mode="after")
    def _secret_with_url(self) -> WebhookSettings:
        if (self.url or self.agents) and self.secret is None:
            raise ValueError("secret is required when a control URL is set")
        return self


class SignalActuatorSettings(Section):
    """Last-resort OS signals to an agent process (same PID namespace); off by default."""

    enabled: bool = Field(False, description="Send signals at all.")
    pid: int | None = Field(None, gt=1, description="Process id to signal.")
    pid_file: Path | None = Field(None, description="File holding the pid (read per signal).")
    agents: list[str] = Field(
        default_factory=list, description="Only verdicts on these agents (empty: any scope)."
    )
    kill_signal: Literal["SIGTERM", "SIGKILL", "SIGINT"] = Field(
        "SIGTERM", description="Sent on kill."
    )
    pause_signal: Literal["SIGSTOP", "none"] = Field("SIGSTOP", description="Sent on pause.")

    @model_validator(mode="after")
    def _target_when_enabled(self) -> SignalActuatorSettings:
        if self.enabled and self.pid is None and self.pid_file is None:
            raise ValueError("enabled needs pid or pid_file")
        return self


class EnforcementSettings(Section):
    """Verdict policy, guard checks, held actions and push actuators."""

    risky_tools: list[str] = Field(
        default_factory=list,
        description="Tool-name globs that are held and fail closed when watchdog is down.",
    )
    hold_delay_s: float = Field(30.0, gt=0, le=86_400, description="Default hold window.")
    hold_rules: list[HoldRule] = Field(default_factory=list, description="Extra hold rules.")
    pause_timeout_s: float = Field(
        3600.0, gt=0, description="A pause without its own ttl ends after this long."
    )
    deny_ttl_s: float = Field(
        300.0, gt=0, description="A deny without its own ttl ends after this long."
    )
    reservation_ttl_s: float = Field(
        300.0, gt=0, description="A budget reservation no span settled is released after this long."
    )
    stream_queue_size: int = Field(
        256, gt=0, description="Verdict events buffered per SSE client before it is dropped."
    )
    stream_keepalive_s: float = Field(15.0, gt=0, description="SSE keep-alive comment interval.")
    policy: PolicySettings = Field(default_factory=PolicySettings)  # type: ignore[arg-type]
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)  # type: ignore[arg-type]
    signal: SignalActuatorSettings = Field(default_factory=SignalActuatorSettings)  # type: ignore[arg-type]


class SlackSettings(Section):
    """Slack app credentials and who may act from Slack."""

    bot_token: SecretStr | None = Field(None, description="Bot token (xoxb-…).")
    signing_secret: SecretStr | None = Field(None, description="App signing secret.")
    channel: str | None = Field(None, description="Channel id or name alerts go to.")
    base_url: str = Field("https://slack.com/api/", description="Slack Web API base URL.")
    allowed_users: list[str] = Field(
        default_factory=list, description="Slack user ids allowed to kill, resume and silence."
    )
    allowed_channels: list[str] = Field(
        default_factory=list, description="Slack channel ids whose members may act."
    )


class DashboardSettings(Section):
    """The web dashboard, its JSON API and its Prometheus metrics."""

    enabled: bool = Field(True, description="Serve the dashboard pages at / and /api/dashboard/.")
    active_run_window_s: int = Field(
        900, gt=0, description="A run is active when it had a step within this many seconds."
    )
    max_runs: int = Field(500, gt=0, le=10_000, description="Most runs one runs-list answer holds.")
    metrics_refresh_s: float = Field(
        15.0, gt=0, description="How often the spend/alert/verdict metrics are recomputed."
    )
    stream_min_interval_ms: int = Field(
        500, ge=50, description="Least time between two live-update events to one page."
    )
    stream_keepalive_s: float = Field(
        15.0, gt=0, description="Idle time after which the live-update stream sends a keep-alive."
    )


# Labels every alert carries; routes, silences and grouping may name only these.
ALERT_LABELS: tuple[str, ...] = (
    "alertname",
    "detector",
    "rule",
    "severity",
    "agent",
    "service",
    "session",
    "trace",
)
# `label=value`, `label!=value`, `label=~regex`, `label!~regex`; the value may be quoted.
MATCHER_RE = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))\s*$'
)


def parse_matcher(text: str) -> tuple[str, str, str]:
    """Split one matcher into (label, op, value); raise ValueError saying what is wrong."""
    m = MATCHER_RE.match(text)
    if m is None:
        raise ValueError(
            f"bad matcher {text!r}: expected label=value, label!=value, label=~regex "
            "or label!~regex"
        )
    label, op = m.group(1), m.group(2)
    value = m.group(4) if m.group(3) is None else re.sub(r"\\(.)", r"\1", m.group(3))
    if label not in ALERT_LABELS:
        raise ValueError(f"unknown label {label!r} in {text!r}; labels: {', '.join(ALERT_LABELS)}")
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"bad regex in {text!r}: {err}") from None
    return label, op, value


def _check_labels(v: list[str]) -> list[str]:
    for label in v:
        if label not in ALERT_LABELS:
            raise ValueError(f"unknown label {label!r}; labels: {', '.join(ALERT_LABELS)}")
    return v


LabelList = Annotated[list[str], AfterValidator(_check_labels)]


class AlertRoute(Section):
    """A child route: alerts matching every matcher go to `receiver`, grouped as set here.

    Unset fields inherit from the parent route (the `alerting` section is the root).
    """

    matchers: list[str] = Field(
        default_factory=list, description='Matchers such as severity="kill" or agent=~"prod-.*".'
    )
    receiver: str | None = Field(None, description="Receiver name; none = the parent's.")
    group_by: LabelList | None = Field(None, description="Labels that split groups.")
    group_wait_s: float | None = Field(
        None, ge=0, description="Wait before a group's first message."
    )
    group_interval_s: float | None = Field(None, ge=0, description="Least time between updates.")
    repeat_interval_s: float | None = Field(
        None, gt=0, description="Re-notify a firing group after."
    )
    continue_matching: bool = Field(
        False, description="Also try the next sibling routes after this one matched."
    )
    routes: list[AlertRoute] = Field(default_factory=list, description="Nested routes.")

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_matcher(text)
        return v


class SlackReceiverSettings(Section):
    """Post to Slack with the app in `slack`; one living message per alert group."""

    channel: str | None = Field(None, description="Channel id or name; none = slack.channel.")
    thread_replies: bool = Field(True, description="Reply in the thread on every state change.")


class WebhookReceiverSettings(Section):
    """POST the group as HMAC-SHA256-signed JSON to a URL."""

    url: SecretStr = Field(..., description="Target URL (kept secret: it may embed a token).")
    secret: SecretStr = Field(..., description="HMAC-SHA256 key for X-Watchdog-Signature.")
    timeout_s: float = Field(10.0, gt=0, description="Deadline of one delivery attempt.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class AlertReceiver(Section):
    """A named notification target: exactly one of slack, webhook or log."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Name routes refer to.")
    slack: SlackReceiverSettings | None = None
    webhook: WebhookReceiverSettings | None = None
    log: bool = Field(False, description="Write the notification to the daemon log.")
    send_resolved: bool = Field(True, description="Notify when a group's alerts resolve.")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> AlertReceiver:
        kinds = [k for k in ("slack", "webhook") if getattr(self, k) is not None]
        if self.log:
            kinds.append("log")
        if len(kinds) != 1:
            raise ValueError("set exactly one of slack, webhook or log")
        return self


class AlertingSettings(Section):
    """Alert lifecycle, grouping, routes and receivers (the root route of the tree).

    Receivers `log` (the daemon log) and, when slack.bot_token and slack.channel are set,
    `slack` exist without being declared. The default receiver is `slack` when Slack is
    configured, else `log`.
    """

    receiver: str | None = Field(None, description="Default receiver; none = slack, else log.")
    group_by: LabelList = Field(
        default_factory=lambda: ["agent", "detector"], description="Labels that split groups."
    )
    group_wait_s: float = Field(30.0, ge=0, description="Wait before a group's first message.")
    group_interval_s: float = Field(300.0, ge=0, description="Least time between updates.")
    repeat_interval_s: float = Field(14_400.0, gt=0, description="Re-notify a firing group after.")
    routes: list[AlertRoute] = Field(default_factory=list, description="Child routes, in order.")
    receivers: list[AlertReceiver] = Field(default_factory=list, description="Named receivers.")
    resolve_after_s: float | None = Field(
        900.0,
        gt=0,
        description="An alert no finding re-asserted for this long resolves (none: never).",
    )
    max_groups: int = Field(1000, gt=0, description="Alert groups held before new ones drop.")
    retry_initial_s: float = Field(1.0, gt=0, description="First retry delay (doubles, jittered).")
    retry_max_s: float = Field(60.0, gt=0, description="Longest retry delay.")
    retry_max_attempts: int = Field(
        5, ge=1, le=50, description="Attempts per notification before it waits for the next flush."
    )
    disable_after_failures: int = Field(
        3, ge=1, description="Failed notifications in a row after which a receiver is disabled."
    )
    slack_min_interval_s: float = Field(
        1.0, ge=0, description="Least time between two Slack calls (Slack allows ~1 msg/s)."
    )
    slack_timeout_s: float = Field(10.0, gt=0, description="Deadline of one Slack API call.")
    slack_ack_s: float = Field(
        2.0, gt=0, lt=3, description="Work a slash command does before answering (Slack waits 3 s)."
    )
    slack_holds: bool = Field(
        True, description="Post each held action to Slack at once, with a Cancel button."
    )

    @model_validator(mode="after")
    def _receivers_exist(self) -> AlertingSettings:
        names = [r.name for r in self.receivers]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"receiver names must be unique: {', '.join(sorted(dupes))}")
        known = {*names, "log", "slack"}

        def walk(routes: list[AlertRoute], where: str) -> None:
            for i, r in enumerate(routes):
                if r.receiver is not None and r.receiver not in known:
                    raise ValueError(f"{where}.{i}.receiver: undefined receiver {r.receiver!r}")
                walk(r.routes, f"{where}.{i}.routes")

        if self.receiver is not None and self.receiver not in known:
            raise ValueError(f"receiver: undefined receiver {self.receiver!r}")
        walk(self.routes, "routes")
        return self


class Settings(BaseSettings):
    """The root of every watchdog setting."""

    model_config = SettingsConfigDict(
        env_prefix="WATCHDOG_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    api_token: SecretStr | None = Field(
        None, description="Bearer token required on /api/ (none: loopback-only trust)."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    sql: SqlSettings = Field(default_factory=SqlSettings)  # type: ignore[arg-type]
    prices: PriceSettings = Field(default_factory=PriceSettings)  # type: ignore[arg-type]
    slack: SlackSettings = Field(default_factory=SlackSettings)  # type: ignore[arg-type]
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)  # type: ignore[arg-type]
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)  # type: ignore[arg-type]
    enforcement: EnforcementSettings = Field(default_factory=EnforcementSettings)  # type: ignore[arg-type]
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)  # type: ignore[arg-type]
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags beat the environment, which beats the `--config` file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def db_path(self) -> Path:
        """The DuckDB file inside the data directory."""
        return self.storage.data_dir / "watchdog.duckdb"


def format_validation_error(err: ValidationError) -> str:
    """Render pydantic errors as `path.to.field: message` lines."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{loc}: {e['msg']}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, `config_file`, the environment and `overrides`.

    Raises ConfigError naming every wrong field by its dotted path.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as err:
        where = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid settings{where}:\n{format_validation_error(err)}") from err
    except (OSError, ValueError) as err:  # YAML syntax errors surface as ValueError subclasses
        raise ConfigError(f"cannot read config file {config_file}: {err}") from err
    finally:
        _CONFIG_FILE.reset(token)
