#!/usr/bin/env bash
# Fetches WeCom's official finance SDK (libWeWorkFinanceSdk_C.so, Linux x86-64, v3 20250205) into
# vendor/finance-sdk/ (ignored by git; nothing of it is committed) and checks its md5.
#
# The official download is the sdk_x86_v3_20250205.tgz on WeCom's 获取会话内容 page. The same file,
# byte for byte, is inside the PyPI wheel wecom-audit==0.1.6, which is what this script fetches,
# because PyPI is reachable from CI. Usage: scripts/fetch-finance-sdk.sh [DEST_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-vendor/finance-sdk}"
library="$dest/libWeWorkFinanceSdk_C.so"
expected_md5="f2db3dd1372c516db6290afbd1b5c698"

if [ -f "$library" ] && [ "$(md5sum "$library" | cut -d' ' -f1)" = "$expected_md5" ]; then
  echo "finance SDK: $library (md5 ok, already there)"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The wheel is built for CPython 3.11 on manylinux2014 x86-64; ask for exactly that one, whatever
# Python runs this.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux2014_x86_64 \
  --dest "$work" "wecom-audit==0.1.6"
wheel="$(ls "$work"/wecom_audit-0.1.6-*.whl)"
python3 - "$wheel" "$work" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    for name in ("wecom_audit/C_sdk/libWeWorkFinanceSdk_C.so", "wecom_audit/C_sdk/WeWorkFinanceSdk_C.h"):
        archive.extract(name, out)
PY
actual_md5="$(md5sum "$work/wecom_audit/C_sdk/libWeWorkFinanceSdk_C.so" | cut -d' ' -f1)"
if [ "$actual_md5" != "$expected_md5" ]; then
  echo "finance SDK: md5 $actual_md5, expected $expected_md5; refusing it" >&2
  exit 1
fi
mkdir -p "$dest"
cp "$work/wecom_audit/C_sdk/libWeWorkFinanceSdk_C.so" "$work/wecom_audit/C_sdk/WeWorkFinanceSdk_C.h" "$dest/"
echo "finance SDK: $library (md5 $actual_md5)"
