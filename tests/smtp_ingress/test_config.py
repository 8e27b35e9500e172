"""services/smtp_ingress/config.py: a bad setting names its variable."""

from __future__ import annotations

import pytest

from services.smtp_ingress.config import IngressSettings
from shared.errors import ConfigError
from shared.settings import load_settings


def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="POSTROOM_TRUSTED_NETWORKS"):
        load_settings(IngressSettings, trusted_networks="10.0.0.300/8")
    with pytest.raises(ConfigError, match="POSTROOM_SMTP_LISTEN"):
        load_settings(IngressSettings, smtp_listen="nowhere")
    assert load_settings(IngressSettings, smtps_listen="").smtps_listen is None
    assert load_settings(IngressSettings, smtp_command_timeout="5m").smtp_command_timeout == 300
