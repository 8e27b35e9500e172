"""Settings of the POP3 service (`POSTROOM_POP3_*` and the shared ones)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator

from services.store.passwords import Argon2Settings
from shared.client_ports import Pop3ListenSettings
from shared.netaddr import HostPort
from shared.proxy import ProxySettings
from shared.settings import CommonSettings, Delay, Duration, ListenAddress
from shared.tls import ListenerTlsSettings


class Pop3Settings(CommonSettings, Argon2Settings, ProxySettings, Pop3ListenSettings, ListenerTlsSettings):
    """Listeners, TLS, authentication policy (argon2id cost included) and session limits of the POP3 service."""

    metrics_listen: ListenAddress = HostPort("0.0.0.0", 9103)
    # pop3_listen, pop3s_listen: Pop3ListenSettings (the store advertises them to mail clients).

    # Old names read for one release (POSTROOM_<SERVICE>_DRAIN_TIMEOUT is every service's drain).
    renamed: ClassVar[dict[str, str]] = {"POSTROOM_POP3_SHUTDOWN_GRACE": "pop3_drain_timeout"}
    # RFC 2595 §2.1 / RFC 8314: no cleartext passwords on the open network; loopback clients are always allowed.
    pop3_allow_plaintext_auth: bool = False
    # RFC 1939 §3 asks for at least 10 minutes; lower values are accepted for tests.
    pop3_autologout: Duration = 600.0
    pop3_lock_ttl: Duration = 120.0
    pop3_tls_handshake_timeout: Duration = 30.0
    pop3_line_limit: int = Field(default=4096, ge=512, le=1 << 20)
    pop3_max_bad_commands: int = Field(default=10, ge=1)
    pop3_max_auth_failures: int = Field(default=3, ge=1)
    pop3_auth_failure_delay: Delay = 1.0
    pop3_auth_failure_delay_max: Duration = 15.0
    pop3_chunk_size: int = Field(default=65536, ge=1024, le=16 << 20)
    # On SIGTERM, how long a command in progress (a RETR, an UPDATE) may take to finish; idle sessions end at once.
    pop3_drain_timeout: Duration = 10.0
    pop3_redis_connections: int = Field(default=200, ge=1, le=10000)
    pop3_max_connections: int = Field(default=5000, ge=1)
    pop3_max_connections_per_ip: int = Field(default=50, ge=1)
    # Behind a load balancer speaking the PROXY protocol (v1 or v2): only POSTROOM_PROXY_TRUSTED_NETWORKS may
    # connect, every connection starts with its header, and the client address it carries is the one the per-IP
    # cap and the logs use (the loopback rule: POSTROOM_PROXY_TRUST_CLIENT_NETWORKS). pop3s: header, then TLS.
    pop3_proxy_protocol: bool = False
    pop3_proxy_protocol_timeout: Duration = 10.0
    # N > 1: N processes share the listening ports with SO_REUSEPORT (the kernel spreads connections), so one pod
    # serves POP3 on N cores; worker i serves /metrics on the metrics port + i, and /readyz on the base port is
    # worker 0's and speaks for all. The connection caps above are per worker. See docs/scaling.md.
    pop3_workers: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _proxy_networks(self) -> Self:
        self.require_proxy_networks(self.pop3_proxy_protocol, "POSTROOM_POP3_PROXY_PROTOCOL")
        return self
