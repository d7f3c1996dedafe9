"""TLS to a real Mosquitto listener: CA + client certificate, a wrong CA, the host-name check."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edge.uplink import ConnectFailed, MqttSession
from tests.infra.mosquitto import Mosquitto
from tests.infra.tls import TestCA

from .helpers import measurement
from .test_uplink_infra import GW, Observer, running, until, uplink_config


class ClientCertBroker(Mosquitto):
    """A TLS listener that demands a client certificate signed by its CA."""

    def _config(self) -> Path:
        conf = super()._config()
        text = conf.read_text().replace("require_certificate false", "require_certificate true")
        conf.write_text(text)
        return conf


async def test_tls_with_ca_and_client_certificate_carries_records(tmp_path: Path) -> None:
    with ClientCertBroker(tmp_path / "broker", tls=True) as broker:
        assert broker.ca is not None and broker.tls_port is not None
        client = broker.ca.issue(GW)
        cfg = uplink_config(broker.tls_port, tls=True, ca_file=broker.ca.cert,
                            cert_file=client.cert, key_file=client.key)
        obs = Observer(broker.port)
        try:
            async with running(tmp_path, cfg) as rig:
                assert rig.links.get("uplink").detail == (  # type: ignore[union-attr]
                    f"mqtts://127.0.0.1:{broker.tls_port} (MQTT 5)")
                session = rig.uplink.session
                assert session is not None
                sock = session.client.socket()  # an ssl.SSLSocket: no Nagle either
                assert isinstance(sock, socket.socket)
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                await rig.outbox.append([measurement(i) for i in range(3)])
                await until(lambda: sorted(obs.seqs()) == [1, 2, 3], "records over TLS")
        finally:
            obs.close()
        # The same without the client certificate: the broker ends the handshake.
        no_cert = uplink_config(broker.tls_port, tls=True, ca_file=broker.ca.cert)
        with pytest.raises(ConnectFailed) as err:
            await MqttSession(no_cert, GW).connect()
        # TLS 1.3 refuses after the handshake: the alert or a bare EOF, before any CONNACK
        assert str(err.value).startswith(
            f"mqtts://127.0.0.1:{broker.tls_port}: connection lost: ")


async def test_a_wrong_ca_fails_with_a_clear_error(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", tls=True) as broker:
        assert broker.tls_port is not None
        stranger = TestCA(tmp_path / "other-ca", name="someone else's CA")
        cfg = uplink_config(broker.tls_port, tls=True, ca_file=stranger.cert)
        with pytest.raises(ConnectFailed) as err:
            await MqttSession(cfg, GW).connect()
        assert str(err.value) == (f"mqtts://127.0.0.1:{broker.tls_port}: TLS certificate check "
                                  "failed: self-signed certificate in certificate chain")


async def test_the_host_name_is_checked_unless_tls_insecure(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", tls=True)
    assert broker.ca is not None and broker.tls_port is not None
    broker.server_cert = broker.ca.issue("not-this-host")  # no subjectAltName for 127.0.0.1
    with broker:
        cfg = uplink_config(broker.tls_port, tls=True, ca_file=broker.ca.cert)
        with pytest.raises(ConnectFailed) as err:
            await MqttSession(cfg, GW).connect()
        assert str(err.value) == (f"mqtts://127.0.0.1:{broker.tls_port}: TLS certificate check "
                                  "failed: IP address mismatch, certificate is not valid for "
                                  "'127.0.0.1'.")
        insecure = uplink_config(broker.tls_port, tls=True, ca_file=broker.ca.cert,
                                 tls_insecure=True)
        session = MqttSession(insecure, GW)
        await session.connect()  # the chain is still checked, only the name is not
        assert session.is_open
        await session.disconnect()
