#!/usr/bin/env bash
# Builds the zone upload without a Docker engine: a Debian bookworm root filesystem tar with the
# Dockerfile's runtime content, from Debian's packages with mmdebstrap and this machine's apt
# sources. The zone console takes the tar (as it takes `docker export` of a container) and runs
# /app/start.sh, which listens on 0.0.0.0:8080.
#
#   scripts/build-zone-rootfs.sh [--config FILE] [--finance-sdk FILE] [--out FILE] [--binary FILE]
#
#   --config FILE       packed as /app/config/wecom-zone.toml (0600, owned by uid 10001). Paths in
#                       it should be absolute or under /app (start.sh runs in /app); keep data under
#                       /app/data.
#   --finance-sdk FILE  libWeWorkFinanceSdk_C.so, packed at the config's [finance_sdk] library path
#                       (default /opt/wecom/libWeWorkFinanceSdk_C.so); glibc and libz.so.1 are in.
#   --out FILE          default dist/wecom-zone-rootfs.tar
#   --binary FILE       pack this wecom-zone instead of building one (cargo build --release --locked)
#
# What goes in beyond Debian's essential set is listed once: deploy/zone-packages and
# deploy/zone-layout.sh, which the Dockerfile uses too. Reproducible apart from what Debian's
# packages change: SOURCE_DATE_EPOCH (default: the last commit's time) sets every timestamp.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
config="" sdk="" out="$here/dist/wecom-zone-rootfs.tar" binary=""
usage() { sed -n '7,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --finance-sdk) sdk=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-zone-rootfs: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

command -v mmdebstrap >/dev/null || {
  echo "build-zone-rootfs: mmdebstrap is missing; install it: apt-get install mmdebstrap" >&2
  exit 1
}
[ -z "$config" ] || [ -f "$config" ] || { echo "build-zone-rootfs: no config at $config" >&2; exit 2; }
[ -z "$sdk" ] || [ -f "$sdk" ] || { echo "build-zone-rootfs: no finance SDK at $sdk" >&2; exit 2; }

sdk_path=""
if [ -n "$sdk" ]; then
  # The path the config loads the SDK from ([finance_sdk] library), else the documented default.
  if [ -n "$config" ]; then
    sdk_path=$(sed -n '/^\[finance_sdk\]/,/^\[/ s/^library *= *"\([^"]*\)".*/\1/p' "$config" | head -n 1)
  fi
  sdk_path=${sdk_path:-/opt/wecom/libWeWorkFinanceSdk_C.so}
  case "$sdk_path" in /*) ;; *) echo "build-zone-rootfs: [finance_sdk] library must be absolute" >&2; exit 2 ;; esac
fi

started=$(date +%s)
if [ -z "$binary" ]; then
  (cd "$here" && cargo build --release --locked --bin wecom-zone)
  binary="$here/target/release/wecom-zone"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# Line tables help backtraces on a developer's machine; the zone gets the smaller binary.
strip --strip-debug -o "$stage/wecom-zone" "$binary" 2>/dev/null || cp "$binary" "$stage/wecom-zone"
cp "$here/deploy/zone-layout.sh" "$here/config/wecom-zone.example.toml" "$stage/"
[ -z "$config" ] || cp "$config" "$stage/wecom-zone.toml"
[ -z "$sdk" ] || cp "$sdk" "$stage/libWeWorkFinanceSdk_C.so"

packages=$(grep -v '^\s*\(#\|$\)' "$here/deploy/zone-packages" | paste -sd, -)
# Whatever apt on this machine is configured with; no mirror is written into the project.
sources=()
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  [ -s "$file" ] && sources+=("$file")
done
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}

layout=("$stage/zone-layout.sh" '"$1"' "$stage/wecom-zone" "$stage/wecom-zone.example.toml")
[ -z "$config" ] && [ -n "$sdk" ] && layout+=("''")
[ -z "$config" ] || layout+=("$stage/wecom-zone.toml")
[ -z "$sdk" ] || layout+=("$stage/libWeWorkFinanceSdk_C.so" "$sdk_path")

mkdir -p "$(dirname "$out")"
# mmdebstrap converts the tree to merged /usr with usrmerge, which brings the whole of perl;
# once the tree is merged, usr-is-merged stands for it and perl goes (perl-base stays, essential).
mmdebstrap --variant=essential --include="usr-is-merged,$packages" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='chroot "$1" dpkg --purge usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl libperl5.36 perl-modules-5.36 libgdbm-compat4' \
  --customize-hook="${layout[*]}" \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/var/cache/debconf/*-old' \
  bookworm "$out" "${sources[@]}"

size=$(stat -c %s "$out")
echo "rootfs: $out ($((size / 1024 / 1024)) MiB, $size bytes) in $(($(date +%s) - started)) s"
echo "zone console: upload $out; start command /app/start.sh; port 8080"
