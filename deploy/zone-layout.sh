#!/bin/sh
# What the zone image holds beyond Debian's packages, laid out under ROOT. The one list of it:
# the Dockerfile runs this with ROOT=/, scripts/build-zone-rootfs.sh on mmdebstrap's tree.
#
#   deploy/zone-layout.sh ROOT BINARY EXAMPLE_CONFIG [CONFIG] [SDK_FILE SDK_PATH]
#
# ROOT/usr/local/bin/wecom-zone          the service
# ROOT/etc/passwd, group, shadow         user and group wecom, uid/gid 10001, no login
# ROOT/app/config/                       wecom-zone.example.toml, and CONFIG as wecom-zone.toml
#                                        (0600, owned by wecom) when given
# ROOT/app/data/                         the store, media and search index (0700, wecom)
# ROOT/app/start.sh                      the zone's start command: absolute paths only
# ROOT/SDK_PATH                          the finance SDK, when given
set -eu

[ "$#" -ge 3 ] || { echo "usage: $0 ROOT BINARY EXAMPLE_CONFIG [CONFIG] [SDK_FILE SDK_PATH]" >&2; exit 2; }
root=$1 binary=$2 example=$3 config=${4:-} sdk_file=${5:-} sdk_path=${6:-}
uid=10001

install -D -m 0755 "$binary" "$root/usr/local/bin/wecom-zone"

grep -q '^wecom:' "$root/etc/group" || echo "wecom:x:$uid:" >> "$root/etc/group"
grep -q '^wecom:' "$root/etc/passwd" || echo "wecom:x:$uid:$uid:wecom-zone:/app:/usr/sbin/nologin" >> "$root/etc/passwd"
if [ -f "$root/etc/shadow" ] && ! grep -q '^wecom:' "$root/etc/shadow"; then
  echo "wecom:!:1::::::" >> "$root/etc/shadow"
fi

install -d -m 0755 "$root/app" "$root/app/config"
install -d -m 0700 -o "$uid" -g "$uid" "$root/app/data"
install -m 0644 "$example" "$root/app/config/wecom-zone.example.toml"
if [ -n "$config" ]; then
  install -m 0600 -o "$uid" -g "$uid" "$config" "$root/app/config/wecom-zone.toml"
fi
if [ -n "$sdk_file" ]; then
  install -D -m 0644 "$sdk_file" "$root$sdk_path"
fi

# The zone may start this without PATH or any environment, as root or not: every path is
# absolute, relative paths in the config are under /app, and root becomes wecom before the
# service starts.
cat > "$root/app/start.sh" <<'START'
#!/bin/sh
cd /app || exit 1
if [ "$(/usr/bin/id -u)" = 0 ]; then
  exec /usr/bin/setpriv --reuid=10001 --regid=10001 --clear-groups \
    /usr/local/bin/wecom-zone serve --config /app/config/wecom-zone.toml
fi
exec /usr/local/bin/wecom-zone serve --config /app/config/wecom-zone.toml
START
chmod 0755 "$root/app/start.sh"
