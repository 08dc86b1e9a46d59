#!/usr/bin/env bash
# Opens a `modeconn report` page in headless Chromium (Debian's package, installed when missing):
# the page must load with no console errors, its screenshot must show the figures (a share
# of its pixels neither white nor the page's text grey: the plotted lines and heat maps), and
# every figure must have its PDF.
#
#   bash scripts/report-check.sh            (the quick digits sweep; SPEC / PROFILE override)
# Env: CARGO_TARGET_DIR, WORK (a scratch directory), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SPEC="${SPEC:-analyses/digits-sweep.toml}"
PROFILE="${PROFILE:-quick}"
WORK="${WORK:-$(mktemp -d)}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
say() { printf 'report-check: %s\n' "$*"; }

if [ ! -x "$CHROMIUM" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build --release -q
BIN="$(cd "${CARGO_TARGET_DIR:-$ROOT/target}" && pwd)/release/modeconn"

"$BIN" run "$SPEC" --profile "$PROFILE" --out "$WORK/run" -q >/dev/null
"$BIN" report "$WORK/run" --pdf >/dev/null
PAGE="$WORK/run/report.html"
for svg in $(find "$WORK/run" -name '*.svg'); do
    head -c 5 "${svg%.svg}.pdf" | grep -q '%PDF-' || { say "FAIL: no PDF beside $svg"; exit 1; }
done
# Self-contained: nothing fetched from elsewhere.
if grep -Eq '<(script|link|img|iframe)[^>]+(src|href)=|@import|url\(' "$PAGE"; then
    say "FAIL: $PAGE references something outside itself"; exit 1
fi

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --user-data-dir="$WORK/profile" --window-size=1200,2400 --hide-scrollbars)
"$CHROMIUM" "${flags[@]}" --enable-logging=stderr --v=0 --virtual-time-budget=3000 \
    --dump-dom "file://$PAGE" >"$WORK/dom.html" 2>"$WORK/console.log" || true
# The page has no scripts: any console message at all is a failure.
if grep -Eq 'CONSOLE|Uncaught' "$WORK/console.log"; then
    grep -E 'CONSOLE|Uncaught' "$WORK/console.log"; say "FAIL: console errors"; exit 1
fi
grep -q "<svg" "$WORK/dom.html" || { say "FAIL: the loaded page has no figure"; exit 1; }
"$CHROMIUM" "${flags[@]}" --screenshot="$WORK/page.png" "file://$PAGE" >/dev/null 2>&1 || true
[ -s "$WORK/page.png" ] || { say "FAIL: no screenshot"; exit 1; }

python3 - "$WORK/page.png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), f"colour type {ctype}"
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride = zlib.decompress(idat), w * bpp
prev, coloured, total = bytearray(stride), 0, 0
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        r, g, bl = line[x], line[x + 1], line[x + 2]
        total += 1
        if max(r, g, bl) - min(r, g, bl) > 40:  # a saturated colour: plotted data, not text
            coloured += 1
    prev = line
share = coloured / total
print(f"report-check: screenshot {w}x{h}, {100 * share:.2f}% coloured pixels")
sys.exit(0 if share > 0.002 else 1)
PY
say "ok: $PAGE loads without console errors and shows its figures"
