"""The BTHome v2 encoder, proven against bthome-ble's own parser (what the edge agent runs)."""

from __future__ import annotations

import logging

import pytest
from bthome_ble import BTHomeBluetoothDeviceData
from hypothesis import given
from hypothesis import strategies as st

from simulators.ble import bthome
from simulators.ble.bthome import ButtonEvent, EncodeError, ObjectId, encode_service_data
from tests.sim_ble.helpers import decode, service_info, values

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
ADDRESS = "A4:C1:38:00:00:01"
MAC = bthome.parse_mac(ADDRESS)


# -- golden bytes from bthome.io ------------------------------------------------------------

def test_objects_match_the_spec_examples() -> None:
    # bthome.io/format examples: temperature 25.06 °C = 02 CA 09, humidity 50.55 % = 03 BF 13,
    # pressure 1008.83 hPa = 04 13 8A 01, battery 97 % = 01 61.
    assert bthome.encode_object(ObjectId.TEMPERATURE, 25.06).hex() == "02ca09"
    assert bthome.encode_object(ObjectId.HUMIDITY, 50.55).hex() == "03bf13"
    assert bthome.encode_object(ObjectId.PRESSURE, 1008.83).hex() == "04138a01"
    assert bthome.encode_object(ObjectId.BATTERY, 97).hex() == "0161"


def test_nonce_matches_the_spec_example() -> None:
    # bthome.io/encryption: MAC 5448E68F80A5, info 0x41, counter bytes 00 11 22 33.
    mac = bytes.fromhex("5448E68F80A5")
    assert bthome.nonce(mac, 0x41, 0x33221100).hex() == "5448e68f80a5d2fc4100112233"


def test_device_info_byte() -> None:
    assert bthome.device_info(encrypted=False) == 0x40
    assert bthome.device_info(encrypted=True) == 0x41
    assert bthome.device_info(encrypted=False, trigger_based=True) == 0x44


def test_objects_are_sent_in_ascending_id_order() -> None:
    data = encode_service_data([(ObjectId.SMOKE, True), (ObjectId.PACKET_ID, 7),
                                (ObjectId.BATTERY, 50)])
    assert data.hex() == "40" + "0007" + "0132" + "2901"


# -- decoded by bthome-ble --------------------------------------------------------------------

def test_plain_advert_decodes_to_every_object() -> None:
    data = encode_service_data([
        (ObjectId.PACKET_ID, 9),
        (ObjectId.BATTERY, 87),
        (ObjectId.TEMPERATURE, -12.34),
        (ObjectId.HUMIDITY, 55.5),
        (ObjectId.PRESSURE, bthome.mpa_to_hpa(0.35)),
        (ObjectId.MOISTURE, 12.25),
        (ObjectId.OPENING, True),
        (ObjectId.DOOR, True),
        (ObjectId.SMOKE, True),
        (ObjectId.TAMPER, False),
        (ObjectId.BUTTON, ButtonEvent.PRESS),
    ])
    got = decode(data)
    assert got["packet_id"] == 9
    assert got["battery"] == 87
    assert got["temperature"] == pytest.approx(-12.34)
    assert got["humidity"] == pytest.approx(55.5)
    assert bthome.hpa_to_mpa(got["pressure"]) == pytest.approx(0.35)
    assert got["moisture"] == pytest.approx(12.25)
    assert got["opening"] is True
    assert got["door"] is True
    assert got["smoke"] is True
    assert got["tamper"] is False
    assert got["event:button"] == "press"


@pytest.mark.parametrize("is_open", [True, False])
def test_door_states(is_open: bool) -> None:
    assert decode(encode_service_data([(ObjectId.DOOR, is_open)]))["door"] is is_open


def test_button_none_fires_no_event() -> None:
    got = decode(encode_service_data([(ObjectId.BUTTON, ButtonEvent.NONE)]))
    assert "event:button" not in got


def test_encrypted_advert_decodes_with_the_right_key() -> None:
    data = encode_service_data([(ObjectId.PACKET_ID, 1), (ObjectId.SMOKE, True),
                                (ObjectId.BATTERY, 64)], key=KEY, mac=MAC, counter=1234)
    assert data[0] == 0x41
    assert int.from_bytes(data[-8:-4], "little") == 1234
    parser = BTHomeBluetoothDeviceData(KEY)
    got = values(parser.update(service_info(ADDRESS, data)))
    assert got["smoke"] is True
    assert got["battery"] == 64
    assert parser.bindkey_verified is True
    assert parser.decryption_failed is False


def test_encrypted_advert_with_a_wrong_key_fails_as_bthome_ble_reports_it(
        caplog: pytest.LogCaptureFixture) -> None:
    data = encode_service_data([(ObjectId.SMOKE, True)], key=KEY, mac=MAC, counter=5)
    parser = BTHomeBluetoothDeviceData(bytes(16))
    with caplog.at_level(logging.WARNING, logger="bthome_ble"):
        got = values(parser.update(service_info(ADDRESS, data)))
    assert "smoke" not in got
    assert parser.bindkey_verified is False
    assert parser.decryption_failed is True
    assert "Decryption failed" in caplog.text


def test_encrypted_advert_from_another_address_fails() -> None:
    # The MAC is part of the nonce: a copy replayed from another address does not decrypt.
    data = encode_service_data([(ObjectId.SMOKE, True)], key=KEY, mac=MAC, counter=5)
    parser = BTHomeBluetoothDeviceData(KEY)
    assert "smoke" not in values(parser.update(service_info("A4:C1:38:00:00:02", data)))
    assert parser.bindkey_verified is False


def test_encrypted_advert_without_a_key_gives_no_values() -> None:
    data = encode_service_data([(ObjectId.SMOKE, True)], key=KEY, mac=MAC, counter=5)
    parser = BTHomeBluetoothDeviceData()
    assert "smoke" not in values(parser.update(service_info(ADDRESS, data)))
    assert parser.bindkey_verified is False


def test_plain_advert_is_refused_when_a_key_is_configured() -> None:
    parser = BTHomeBluetoothDeviceData(KEY)
    plain = encode_service_data([(ObjectId.SMOKE, True)])
    got = values(parser.update(service_info(ADDRESS, plain)))
    assert "smoke" not in got
    assert parser.downgrade_detected is True


# -- properties --------------------------------------------------------------------------------

@given(mpa=st.integers(0, 16_000_000).map(lambda pa: pa / bthome.PA_PER_MPA))
def test_any_field_pressure_survives_the_round_trip_to_1_pa(mpa: float) -> None:
    got = decode(encode_service_data([(ObjectId.PRESSURE, bthome.mpa_to_hpa(mpa))]))
    assert bthome.hpa_to_mpa(got["pressure"]) == pytest.approx(mpa, abs=1e-6)


@given(centi=st.integers(-32768, 32767))
def test_any_temperature_survives_the_round_trip(centi: int) -> None:
    got = decode(encode_service_data([(ObjectId.TEMPERATURE, centi / 100)]))
    assert got["temperature"] == pytest.approx(centi / 100)


@given(key=st.binary(min_size=16, max_size=16), counter=st.integers(0, 0xFFFF_FFFF),
       mac=st.binary(min_size=6, max_size=6), battery=st.integers(0, 100), smoke=st.booleans())
def test_any_key_counter_and_mac_decrypt(key: bytes, counter: int, mac: bytes, battery: int,
                                         smoke: bool) -> None:
    address = ":".join(f"{b:02X}" for b in mac)
    data = encode_service_data([(ObjectId.BATTERY, battery), (ObjectId.SMOKE, smoke)],
                               key=key, mac=mac, counter=counter)
    got = decode(data, address=address, key=key)
    assert got["battery"] == battery
    assert got["smoke"] is smoke


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("object_id", "value", "message"), [
    (ObjectId.PRESSURE, bthome.mpa_to_hpa(17.0), "PRESSURE: 170000.0 is outside 0 .. 167772"),
    (ObjectId.BATTERY, -1, "BATTERY: -1 is outside 0 .. 255"),
    (ObjectId.TEMPERATURE, 400.0, "TEMPERATURE: 400.0 is outside -327.68 .. 327.67"),
    (ObjectId.DOOR, 2, "DOOR is a binary object: expected a bool, got 2"),
])
def test_values_the_object_cannot_carry_are_refused(object_id: ObjectId, value: float,
                                                    message: str) -> None:
    with pytest.raises(EncodeError) as err:
        bthome.encode_object(object_id, value)
    assert str(err.value).startswith(message)


def test_encryption_needs_the_mac() -> None:
    with pytest.raises(EncodeError, match="MAC"):
        encode_service_data([(ObjectId.SMOKE, True)], key=KEY)


@pytest.mark.parametrize(("text", "message"), [
    ("00" * 15, "bind key must be 16 bytes (32 hex characters), got 15 bytes"),
    ("zz" * 16, "bind key must be 32 hexadecimal characters"),
])
def test_bad_keys(text: str, message: str) -> None:
    with pytest.raises(EncodeError) as err:
        bthome.parse_key(text)
    assert str(err.value) == message


@pytest.mark.parametrize("address", ["A4:C1:38:00:00", "A4-C1-38-00-00-01", "G4:C1:38:00:00:01"])
def test_bad_mac_addresses(address: str) -> None:
    with pytest.raises(EncodeError):
        bthome.parse_mac(address)
