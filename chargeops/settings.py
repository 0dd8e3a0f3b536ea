"""Process settings: every command-line flag has a `CHARGEOPS_*` environment twin (SPEC §3).

The classes here are the only readers of `CHARGEOPS_*`: the command line passes them just the
flags the user typed, so the precedence is flag > environment > default, decided in one place.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Literal

from limits import RateLimitItem, parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROLES = ("gateway", "ingest", "ops", "api")


def parse_rate_limit(spec: str) -> list[RateLimitItem]:
    """The windows of a rate limit such as `20/second;600/minute` (`off`: none); ValueError says the form."""
    if spec.strip().lower() == "off":
        return []
    try:
        return list(parse_many(spec))
    except ValueError as exc:
        raise ValueError(f"{spec!r} is not a rate limit like '20/second;600/minute' or 'off'") from exc


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, 192.168.1.7` → networks (`trusted_proxies`); a bad entry raises ValueError naming it."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR: {item!r}") from None
    return tuple(out)


class LogSettings(BaseSettings):
    """How a command logs (`CHARGEOPS_LOG_LEVEL`, `CHARGEOPS_LOG_FORMAT`); every command reads these."""

    model_config = SettingsConfigDict(env_prefix="CHARGEOPS_", extra="ignore")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR (a command may have its own default)"
    )
    log_format: Literal["text", "json"] = Field(default="text", description="log lines as text or JSON")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def level_or(self, default: str) -> str:
        """The log level asked for (flag or environment), else the command's own `default`."""
        return self.log_level if "log_level" in self.model_fields_set else default


class Settings(LogSettings):
    """Everything a chargeops process can be told; defaults are the embedded, no-services setup."""

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{Path.cwd() / 'chargeops.db'}",
        description="SQLAlchemy async URL; SQLite in the working directory by default",
    )
    mqtt_url: str | None = Field(
        default=None,
        description="mqtt://[user:password@]host:port[/root] or mqtts:// (TLS); unset = in-process bus",
    )
    mqtt_username: str | None = Field(default=None, description="broker user name (or in the URL)")
    mqtt_password: SecretStr | None = Field(
        default=None, description="broker password (or in the URL); environment only: a flag shows in `ps`"
    )
    mqtt_ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) the broker's certificate must chain to (mqtts://; default: system CAs)",
    )
    mqtt_cert_file: Path | None = Field(
        default=None, description="client certificate (PEM) for a broker that asks for one (mqtts://)"
    )
    mqtt_key_file: Path | None = Field(
        default=None,
        description="the client certificate's private key (PEM; default: in the certificate file)",
    )
    admin_token: SecretStr | None = Field(default=None, description="bearer token with the admin role")
    metrics_token: SecretStr | None = Field(
        default=None, description="when set, /metrics answers only `Authorization: Bearer` with this token"
    )
    roles: str = Field(default=",".join(ROLES), description="comma-separated roles this process runs")

    ocpp_host: str = "127.0.0.1"
    ocpp_port: int = 9000
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    metrics_port: int | None = Field(
        default=None, description="serve /metrics on this port (HTTP host) instead of the HTTP port"
    )
    access_log: bool = Field(default=True, description="one line per API request on chargeops.access")
    api_db_pool: int = Field(
        default=4, ge=1, description="database connections the HTTP API may hold (its own pool, not ingest's)"
    )
    api_process: bool = Field(
        default=True,
        description="run the HTTP API in a worker process of its own when serve runs it with other roles",
    )
    api_rate_limit: str = Field(
        default="20/second;600/minute",
        description="requests per API token (per address for bad tokens), e.g. 20/second;600/minute, or off",
    )

    trusted_proxies: str = Field(
        default="",
        description="comma-separated CIDRs of load balancers whose X-Forwarded-For / Forwarded names the "
        "charger's address (failed-login limits and logs); empty: trust none",
    )
    accept_unknown: bool = Field(default=False, description="accept chargers that are not registered")
    registration_policy: Literal["reject", "pending"] = Field(
        default="reject", description="what BootNotification of an unknown charger gets: reject | pending"
    )
    heartbeat_interval: int = Field(default=300, description="seconds, sent in BootNotification")
    boot_retry_interval: int = Field(default=60, description="seconds a Pending/Rejected charger waits")
    call_timeout: float = Field(default=30.0, description="seconds to wait for a charger's answer")
    max_frame_bytes: int = Field(default=1 << 20, description="larger frames close with 1009")
    handshake_concurrency: int = Field(
        default=32, description="handshakes checked against the database at once"
    )
    handshake_backlog: int = Field(
        default=2000, description="handshakes allowed to wait; beyond it chargers get 503 and retry"
    )
    ws_ping_interval: float = Field(
        default=20.0, gt=0, description="seconds between WebSocket pings to each charger"
    )
    ws_ping_timeout: float = Field(
        default=20.0, gt=0, description="seconds to answer a ping before the link counts as dead"
    )
    login_failures_allowed: int = Field(default=10, description="failed logins per id / address per minute")
    login_backoff_seconds: float = Field(default=60.0, description="refusal period after too many failures")

    tls_cert: Path | None = Field(default=None, description="server certificate (PEM) for wss://")
    tls_key: Path | None = Field(default=None, description="server private key (PEM)")
    tls_second_cert: Path | None = Field(
        default=None,
        description="a second server certificate (PEM), the other key type: RSA beside ECDSA or the reverse",
    )
    tls_second_key: Path | None = Field(default=None, description="the second certificate's key (PEM)")
    tls_reload_interval: float = Field(
        default=30.0,
        ge=0,
        description="seconds between looks at the TLS and contract root files; changed ones load (0: never)",
    )
    tls_client_ca: Path | None = Field(
        default=None, description="CA bundle for client certificates (security profile 3)"
    )
    ca_dir: Path | None = Field(
        default=None,
        description="the built-in CA's directory (root key 0600 and ca.pem), made on first use "
        "(default ./chargeops-ca)",
    )
    ca_organization: str = Field(
        default="chargeops",
        min_length=1,
        max_length=64,
        description="the operator's organization: the O a station's CSR must carry, and the CA's own",
    )
    ca_certificate_days: int = Field(
        default=365, ge=1, le=3650, description="days a certificate the built-in CA signs is valid"
    )
    certificate_renewal_days: float = Field(
        default=30.0,
        gt=0,
        description="days before a station's certificate expires that it is asked to renew it (once a day)",
    )
    allow_private_urls: bool = Field(
        default=False, description="allow loopback/private firmware and diagnostics URLs"
    )
    ocsp_responder_url: str | None = Field(
        default=None,
        description="OCSP responder asked about contract and V2G certificates instead of the one the station "
        "names (an OCSP proxy, a lab's responder); unset: the station's",
    )
    contract_roots: Path | None = Field(
        default=None,
        description="V2G and MO root certificates (a PEM file, or a directory of .pem / .crt / .cer "
        "files) an Authorize contract certificate chain is validated against (C07.FR.06); none: a PEM chain "
        "alone is CertChainError",
    )
    contract_roots_ca: bool = Field(
        default=False,
        description="trust the built-in CA's root (ca.pem in --ca-dir) as a V2G root as well",
    )
    contract_cert_service_url: str | None = Field(
        default=None,
        description="contract-certificate service Get15118EVCertificate is forwarded to (HTTP POST of JSON)",
    )
    contract_cert_test_pool: bool = Field(
        default=False,
        description="labs only: answer Get15118EVCertificate from the built-in test pool when no service "
        "is set",
    )
    pki_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="seconds an OCSP responder or the contract-certificate service may take to answer",
    )
    gateway_id: str = Field(default="gw-1", description="name of this gateway process on the bus")
    node_id: str = Field(
        default_factory=socket.gethostname,
        description="stable name of this process for its persistent MQTT session (default: host name)",
    )
    spool_dir: Path | None = Field(
        default=None, description="gateway event spool while the broker is away (default ./chargeops-spool)"
    )
    spool_max_events: int = Field(
        default=1_000_000, description="events the gateway spools; beyond it calls get InternalError"
    )
    command_ack_timeout: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="s the gateway holding a charger may take to pick up an API command (else not_connected)",
    )
    bus_linger_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="ms a gateway holds events to send more per MQTT message (0: one event-loop iteration)",
    )
    sample_retention_days: int = Field(
        default=90, description="days of raw meter samples and 1-minute rollups kept"
    )
    event_retention_days: int = Field(
        default=180,
        ge=0,
        description="days of high-volume raw events kept (meter values, statuses, presence, session "
        "updates, reports); signed meter values, session starts and ends, faults and security events stay; "
        "0: keep all",
    )
    fleet_metrics_interval: float = Field(default=10.0, description="seconds between fleet gauge refreshes")
    rules_file: Path | None = Field(
        default=None, description="fault rules (YAML) replacing the built-in ops/rules.yaml"
    )
    site_margin_pct: float = Field(
        default=5.0,
        ge=0,
        le=50,
        description="% of each site's grid limit the planner keeps unused (metering lag, EVs ramping)",
    )
    site_plan_interval: float = Field(
        default=60.0, description="seconds between full re-plans of the site power budgets (ops role)"
    )
    ops_interval: float = Field(
        default=30.0, description="seconds between ops scans (offline, stalled energy) and gauge refreshes"
    )
    supply_interval: float = Field(
        default=900.0,
        gt=0,
        description="seconds between supply reviews (reorders, stock-out probabilities, stored warnings)",
    )
    meter_max_power_kw: float = Field(
        default=400.0,
        gt=0,
        description="kW a charger's register may rise at most when its model's rated power is not registered",
    )
    meter_max_clock_skew: float = Field(
        default=300.0,
        gt=0,
        description="seconds a meter reading may be stamped ahead of the server clock (or before its start)",
    )
    tariff_refresh: float = Field(
        default=5.0,
        ge=0,
        description="seconds a gateway prices by the tariffs and charger sites it read before reading again",
    )
    cost_update_interval: float = Field(
        default=60.0,
        ge=0,
        description="seconds between CostUpdated calls telling 2.x stations a session's running cost "
        "(when it changed; 0: never, the TransactionEvent answers carry it)",
    )
    local_list_groups: str = Field(
        default="",
        description="comma-separated token groups whose tokens (group_id, or the group token itself) go on "
        "chargers' local authorization lists; empty: every token",
    )
    local_list_sync_interval: float = Field(
        default=0.0,
        ge=0,
        description="seconds between automatic syncs of stale or never-synced local lists (ops role); 0: off",
    )

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: str) -> str:
        unknown = {r.strip() for r in value.split(",") if r.strip()} - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s): {', '.join(sorted(unknown))}; known: {', '.join(ROLES)}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("api_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    def local_list_group_set(self) -> frozenset[str]:
        """The groups of `local_list_groups` (empty: every token goes on the lists)."""
        return frozenset(g.strip() for g in self.local_list_groups.split(",") if g.strip())

    def role_set(self) -> set[str]:
        """The roles named in `roles` (checked against the known ones when the settings were made)."""
        return {r.strip() for r in self.roles.split(",") if r.strip()}


class SimSettings(LogSettings):
    """`chargeops simulate`: flag `--NAME`, environment `CHARGEOPS_SIM_NAME` (not process settings: a
    simulated fleet is not part of the backend)."""

    model_config = SettingsConfigDict(env_prefix="CHARGEOPS_SIM_", extra="ignore")

    csms: str = Field(description="central system URL, e.g. ws://127.0.0.1:9000/ocpp")
    chargers: int = Field(default=1, ge=0, description="number of simulated chargers")
    protocol: Literal["ocpp1.6", "ocpp2.0.1", "ocpp2.1", "mixed"] = "ocpp1.6"
    swap_stations: int = Field(default=0, ge=0, description="simulated battery-swap stations")
    v2x_chargers: int = Field(default=0, ge=0, description="simulated bidirectional OCPP 2.1 chargers")
    duration: float | None = Field(default=None, description="seconds to run (default: until stopped)")
    fault_rate: float = Field(default=0.0, ge=0, description="faults per charger per simulated hour")
    seed: int = 0
    id_prefix: str = "SIM"
    password: str | None = Field(default=None, description="Basic-auth password for every charger")
    time_scale: float = Field(default=1.0, gt=0, description="simulated seconds per real second")
    swap_rate: float = Field(default=6.0, ge=0, description="swaps per station per simulated hour")
    session_rate: float = Field(default=0.02, ge=0, description="EV arrivals per free connector per minute")
    sample_interval: float = Field(default=60.0, gt=0, description="simulated seconds between meter values")
    connect_rate: float = Field(default=500.0, gt=0, description="new connections per second")
    strict: bool = Field(default=False, description="validate all traffic against the OCPP schemas")


class DemoSettings(BaseSettings):
    """`chargeops demo`'s own options: flag `--NAME`, environment `CHARGEOPS_DEMO_NAME`; the rest of what a
    demo runs with are `Settings`."""

    model_config = SettingsConfigDict(env_prefix="CHARGEOPS_DEMO_", extra="ignore")

    chargers: int = Field(default=20, ge=0, description="simulated chargers")
    fault_rate: float = Field(default=0.5, ge=0, description="faults per charger per simulated hour")
    time_scale: float = Field(default=30.0, gt=0, description="simulated seconds per real second")
    fresh: bool = Field(default=False, description="remove the demo's SQLite database first")
