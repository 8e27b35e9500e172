"""Request bodies of the admin API, validated strictly (unknown fields, wrong types and bounds are a 400)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.store.ratelimit import parse_rate

# Bounds keep one request cheap: argon2 hashes the whole password; a quota fits Redis's 64-bit counters.
MAX_PASSWORD = 1024
MAX_QUOTA = 10**15
MAX_TEXT = 512
MAX_SELECTOR = 200  # services/store/dkim.py checks the syntax
MAX_DOMAIN = 255


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DomainIn(Body):
    domain: str = Field(min_length=1, max_length=MAX_TEXT)


class UserIn(Body):
    address: str = Field(min_length=1, max_length=MAX_TEXT)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    quota: int = Field(default=0, ge=0, le=MAX_QUOTA)


class UserPatch(Body):
    password: str | None = Field(default=None, min_length=1, max_length=MAX_PASSWORD)
    quota: int | None = Field(default=None, ge=0, le=MAX_QUOTA)
    # N/PERIOD or MESSAGES,RECIPIENTS/PERIOD, or "default" (back to POSTROOM_SEND_LIMIT).
    send_limit: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("send_limit")
    @classmethod
    def _send_limit(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() != "default":
            parse_rate(value, recipients=True)
        return value

    @model_validator(mode="after")
    def _something(self) -> UserPatch:
        if self.password is None and self.quota is None and self.send_limit is None:
            raise ValueError("give password, quota and/or send_limit")
        return self


class DkimIn(Body):
    selector: str | None = Field(default=None, min_length=1, max_length=MAX_SELECTOR)
    algorithm: Literal["rsa", "ed25519"] = "rsa"


class AliasIn(Body):
    address: str = Field(min_length=1, max_length=MAX_TEXT)
    targets: list[str] = Field(min_length=1, max_length=1000)


class RequeueIn(Body):
    queue_ids: list[str] = Field(default_factory=list, max_length=10000)
    all: bool = False

    @model_validator(mode="after")
    def _choice(self) -> RequeueIn:
        if bool(self.queue_ids) == self.all:
            raise ValueError("give either queue_ids or all: true")
        return self
