# Commands from the cloud (spec "Command"), answered on cmd/ack (spec "Ack").
#
# Loaded only while a command is handled, then dropped from memory (fg/uplink.py). The firmware
# carries out ping, report_health and sync_clock; any other command, a stale one (older than
# its ttl) or one it cannot decode is answered ok=false with the reason, so the sender always
# learns what happened.

import json

from fg.records import VERSION


def _ack(cid, ok, ts, error=None, result=None):
    out = '{"v":1,"id":%s,"ok":%s,"ts":%d' % (json.dumps(cid), "true" if ok else "false", ts)
    if result:
        out += ',"result":' + result
    if error:
        out += ',"error":' + json.dumps(error[:256])
    return out + "}"


def _peek_id(msg):
    # the id of a command that does not decode, when it has a usable one
    try:
        cid = json.loads(msg).get("id")
    except (ValueError, AttributeError):
        return None
    if isinstance(cid, str) and 0 < len(cid) <= 64 and " " not in cid:
        return cid
    return None


def run(up, msg):
    """Carry out one command for the Uplink ``up`` and publish its ack."""
    now = up.hw.now_ms()
    try:
        c = json.loads(msg)
        cid, name, ts = c["id"], c["cmd"], c["ts"]
        if c.get("v") != 1 or not isinstance(cid, str) or not isinstance(name, str) or \
                not isinstance(ts, int) or isinstance(ts, bool):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        up.counters["bad_command"] = up.counters.get("bad_command", 0) + 1
        cid = _peek_id(msg)
        if cid is not None:
            up.client.publish(up.topic("cmd/ack"), _ack(cid, False, now, "bad command").encode(),
                              False, 1)
        return
    ttl = c.get("ttl")
    ok, error, result = True, None, None
    if isinstance(ttl, int) and now > ts + ttl * 1000:
        ok, error = False, "stale: older than its ttl of %d s" % ttl
    elif name == "ping":
        result = '{"version":%s}' % json.dumps(VERSION)
    elif name == "report_health":
        up.publish_health()
    elif name == "sync_clock":
        ok = up.hw.set_clock(ts)
        if not ok:
            error = "this port cannot set its clock"
    else:
        ok, error = False, "command %s is not supported by the firmware" % json.dumps(name)
    up.counters["commands"] = up.counters.get("commands", 0) + 1
    up.client.publish(up.topic("cmd/ack"), _ack(cid, ok, now, error, result).encode(), False, 1)
