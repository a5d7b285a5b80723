#!/usr/bin/env bash
# Builds the Windows service (self-contained win-x64, runs without an installed .NET) into
# artifacts/windows/postgrey with the default whitelists, beside postgrey-service.ps1 that
# installs it; checks the script's syntax with PowerShell when pwsh is given as PWSH=path.
# Prints the folder as its last line. Cross-built here; it runs on Windows only.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/artifacts}/windows
rm -rf "$out"
dotnet publish "$root/src/Postgrey/Postgrey.csproj" -c Release -r win-x64 --self-contained \
    -o "$out/postgrey" >&2
cp "$root/etc/whitelist_clients" "$root/etc/whitelist_recipients" "$out/postgrey/"
cp "$root/packaging/windows/postgrey-service.ps1" "$out/"
if [ -n "${PWSH:-}" ]; then
    "$PWSH" -NoProfile -File "$root/packaging/windows/check-syntax.ps1" "$out/postgrey-service.ps1" >&2
fi
[ -f "$out/postgrey/postgrey.exe" ]
echo "$out"
