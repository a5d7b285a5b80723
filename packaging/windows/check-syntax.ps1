# Parses a PowerShell script and fails on any syntax error (CI runs it with pwsh on Linux,
# where the service cmdlets themselves do not exist).
param([Parameter(Mandatory = $true)][string] $Path)
$errors = $null
[System.Management.Automation.Language.Parser]::ParseFile($Path, [ref]$null, [ref]$errors) | Out-Null
if ($errors) {
    $errors | ForEach-Object { Write-Error $_.ToString() }
    exit 1
}
"syntax ok: $Path"
