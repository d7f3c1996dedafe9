# Opening the MQTT session: TLS context, last will, CONNECT, status online, the subscriptions.
#
# Needed at start (the TLS context) and once per connection; fg/uplink.py loads this module
# for that and drops it from memory again. The last will is the retained status "offline"
# with reason "lwt" (spec "Status"): registered at CONNECT, published by the broker when the
# node vanishes (power cut, lost Wi-Fi); its ts is the connect time. The session is clean, so
# both subscriptions (cmd, and stored: the collector's confirmations) are made on every connect,
# before any record is sent: a confirmation of what this connection sends cannot be missed.
# A confirmation published while the node was away is lost with the session; the records it
# named are sent again after the confirm timeout and confirmed again.

import json

from fg.mqtt import MQTTClient, MQTTException
from fg.records import VERSION


def _der(pem):
    # MicroPython's TLS takes DER: a PEM text (certificate or key) is base64 between its lines
    import binascii

    body = "".join(line for line in pem.split("\n") if line and not line.startswith("-----"))
    return binascii.a2b_base64(body)


def tls_setup(ctx, m):
    """Set up an ssl.SSLContext for config.json's mqtt section: the broker's certificate is
    checked against ``ca`` and its host name; ``cert``/``key`` identify the gateway. Returns
    None when the broker is reached without TLS."""
    if not m["tls"]:
        return None
    import ssl

    ctx.verify_mode = ssl.CERT_REQUIRED
    if m.get("ca"):
        ctx.load_verify_locations(cadata=_der(m["ca"]))
    if m.get("cert"):
        ctx.load_cert_chain(_der(m["cert"]), _der(m["key"]))
    for key in ("ca", "cert", "key"):  # parsed into the context: the texts can go
        m.pop(key, None)
    return ctx


def status_json(gw, state, ts, site, reason):
    """Spec "Status" (retained; with state offline and reason "lwt" it is the last will)."""
    out = '{"v":1,"gw":"%s","state":"%s","ts":%d,"ver":%s' % (gw, state, ts, json.dumps(VERSION))
    if site:
        out += ',"site":"%s"' % site
    return out + ',"reason":%s}' % json.dumps(reason)


def session(up):
    """A connected MQTTClient for the Uplink ``up``, or None after counting and scheduling the
    next attempt."""
    m, cfg = up.m, up.cfg
    now = up.hw.now_ms()
    client = MQTTClient(cfg.gw, m["host"], m["port"], m.get("username"), m.get("password"),
                        m["keepalive_s"], up.tls, m["timeout_s"])
    will = status_json(cfg.gw, "offline", now, cfg.site, "lwt")
    client.set_last_will(up.topic("status"), will.encode(), True, 1)
    client.set_callback(up.on_message)
    client.rx = up.buf  # incoming payloads land in the batch buffer (fg/mqtt.py, bounded)
    try:
        client.connect(True)
        reason = up.hw.boot_reason() if up.first else "reconnect"
        online = status_json(cfg.gw, "online", now, cfg.site, reason)
        client.publish(up.topic("status"), online.encode(), True, 1)
        client.subscribe(up.topic("cmd"), 1)
        if not up.puback:
            client.subscribe(up.topic("stored"), 1)
        return client
    except MQTTException as e:
        client.close()
        up.counters["refused"] = up.counters.get("refused", 0) + 1
        up.retry("broker refused the connection: %s" % (e.args[0],))
    except OSError as e:
        client.close()
        up.counters["connect_failed"] = up.counters.get("connect_failed", 0) + 1
        up.retry("cannot connect to %s:%d: %s" % (m["host"], m["port"], e))
    except MemoryError:  # the TLS handshake found no room: fg/uplink.py counts it, retries
        client.close()
        raise
    return None
