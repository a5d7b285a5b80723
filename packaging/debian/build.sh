#!/usr/bin/env bash
# Builds the Debian package postgrey-dotnet_VERSION_ARCH.deb with dpkg-deb: the Native AOT
# binary, the systemd units, /etc/default/postgrey and the default whitelists as conffiles.
# Prints the package's path as its last line. Needs the .NET SDK, dpkg-deb and a C linker
# (clang, or gcc) for Native AOT. OUT=DIR puts the package there (default: artifacts/).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/packaging/debian"
out=${OUT:-$root/artifacts}

version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' "$root/Directory.Build.props")
arch=$(dpkg --print-architecture)
case "$arch" in
    amd64) rid=linux-x64 ;;
    arm64) rid=linux-arm64 ;;
    *) echo "build.sh: no .NET runtime for $arch" >&2; exit 1 ;;
esac
# Native AOT links with clang by default; Debian's gcc does as well.
linker=clang
command -v clang >/dev/null || linker=gcc

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dotnet publish "$root/src/Postgrey/Postgrey.csproj" -c Release -r "$rid" \
    -p:PublishAot=true -p:CppCompilerAndLinker="$linker" -p:StripSymbols=true \
    -o "$work/publish" >&2

pkg="$work/pkg"
install -D -m 0755 "$work/publish/postgrey" "$pkg/usr/lib/postgrey/postgrey"
install -m 0644 "$work/publish/libe_sqlite3.so" "$pkg/usr/lib/postgrey/libe_sqlite3.so"
install -d "$pkg/usr/sbin"
ln -s ../lib/postgrey/postgrey "$pkg/usr/sbin/postgrey"
install -D -m 0644 "$root/packaging/systemd/postgrey.service" "$pkg/lib/systemd/system/postgrey.service"
install -D -m 0644 "$root/packaging/systemd/postgrey.socket" "$pkg/lib/systemd/system/postgrey.socket"
install -D -m 0644 "$here/default" "$pkg/etc/default/postgrey"
install -D -m 0644 "$root/etc/whitelist_clients" "$pkg/etc/postgrey/whitelist_clients"
install -D -m 0644 "$root/etc/whitelist_recipients" "$pkg/etc/postgrey/whitelist_recipients"
doc="$pkg/usr/share/doc/postgrey-dotnet"
install -D -m 0644 "$root/README.md" "$doc/README.md"
install -m 0644 "$root/docs/install.md" "$doc/install.md"
install -m 0644 "$root/LICENSE" "$doc/copyright"
install -m 0644 "$root/docs/tools.md" "$doc/tools.md"
install -d "$pkg/usr/share/man/man8"
gzip -9n < "$root/packaging/man/postgrey.8" > "$pkg/usr/share/man/man8/postgrey.8.gz"
chmod 0644 "$pkg/usr/share/man/man8/postgrey.8.gz"

install -d "$pkg/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" "$here/control.in" > "$pkg/DEBIAN/control"
install -m 0644 "$here/conffiles" "$pkg/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"

mkdir -p "$out"
deb="$out/postgrey-dotnet_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >&2
echo "$deb"
