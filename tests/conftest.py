"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from tests.mqtt_broker import MqttBroker, broker_kind


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A private MQTT broker on a free port for one test module (Mosquitto if installed, else amqtt)."""
    if broker_kind() is None:
        pytest.skip("no MQTT broker available")
    b = MqttBroker(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.close()
