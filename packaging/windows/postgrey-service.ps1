<#
.SYNOPSIS
    Installs, starts, stops and removes Postgrey for .NET as a Windows service.

.DESCRIPTION
    install: copies a build (dotnet publish src/Postgrey -c Release -r win-x64 --self-contained)
             to %ProgramFiles%\postgrey, creates %ProgramData%\postgrey (database and whitelists),
             registers the event log source "postgrey" and the service "postgrey" (automatic
             start, restarted on failure), and starts it.
    start / stop: as the names say.
    remove:  stops and deletes the service and the program files; the data stays unless -Purge.

.EXAMPLE
    .\postgrey-service.ps1 install -Source ..\..\out\postgrey -Arguments '--inet=127.0.0.1:10023 --delay=120'
    .\postgrey-service.ps1 remove -Purge
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true, Position = 0)]
    [ValidateSet('install', 'start', 'stop', 'remove')]
    [string] $Action,

    # The published build (the folder holding postgrey.exe).
    [string] $Source = (Join-Path $PSScriptRoot 'postgrey'),

    # postgrey's flags, as on Linux. The database defaults to %ProgramData%\postgrey.
    [string] $Arguments = '--inet=127.0.0.1:10023',

    # With remove: delete the database and the whitelists too.
    [switch] $Purge
)

$ErrorActionPreference = 'Stop'
$ServiceName = 'postgrey'
$ProgramDir = Join-Path $env:ProgramFiles 'postgrey'
$DataDir = Join-Path $env:ProgramData 'postgrey'
$Exe = Join-Path $ProgramDir 'postgrey.exe'

function Assert-Administrator {
    $principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'Run this script as Administrator.'
    }
}

function Install-Postgrey {
    if (-not (Test-Path (Join-Path $Source 'postgrey.exe'))) {
        throw "No postgrey.exe in $Source (dotnet publish src/Postgrey -c Release -r win-x64 --self-contained -o $Source)"
    }
    if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
        throw "The service $ServiceName exists already: remove it first."
    }
    New-Item -ItemType Directory -Force -Path $ProgramDir | Out-Null
    Copy-Item -Path (Join-Path $Source '*') -Destination $ProgramDir -Recurse -Force

    # Database and whitelists; the default lists of the repository's etc/ if they came along.
    New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
    foreach ($list in 'whitelist_clients', 'whitelist_recipients') {
        $target = Join-Path $DataDir $list
        $shipped = Join-Path $Source $list
        if (-not (Test-Path $target) -and (Test-Path $shipped)) {
            Copy-Item $shipped $target
        }
    }
    # Only SYSTEM and Administrators may read the database (postgrey's umask 077).
    & icacls.exe $DataDir /inheritance:r /grant:r 'SYSTEM:(OI)(CI)F' 'Administrators:(OI)(CI)F' | Out-Null

    if (-not [System.Diagnostics.EventLog]::SourceExists($ServiceName)) {
        [System.Diagnostics.EventLog]::CreateEventSource($ServiceName, 'Application')
    }

    $binaryPath = "`"$Exe`" $Arguments"
    New-Service -Name $ServiceName -BinaryPathName $binaryPath -DisplayName 'Postgrey greylisting policy server' `
        -Description 'Greylisting policy server for Postfix (Postgrey for .NET)' -StartupType Automatic | Out-Null
    # Restart after 1 s, 1 s, then 10 s on failure; reset the count after a day.
    & sc.exe failure $ServiceName reset= 86400 actions= restart/1000/restart/1000/restart/10000 | Out-Null
    Start-Service -Name $ServiceName
    Get-Service -Name $ServiceName
}

function Remove-Postgrey {
    $service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
    if ($service) {
        if ($service.Status -ne 'Stopped') {
            Stop-Service -Name $ServiceName -Force
            $service.WaitForStatus('Stopped', (New-TimeSpan -Seconds 30))
        }
        & sc.exe delete $ServiceName | Out-Null
    }
    if (Test-Path $ProgramDir) {
        Remove-Item -Recurse -Force $ProgramDir
    }
    if ($Purge) {
        if (Test-Path $DataDir) {
            Remove-Item -Recurse -Force $DataDir
        }
        if ([System.Diagnostics.EventLog]::SourceExists($ServiceName)) {
            [System.Diagnostics.EventLog]::DeleteEventSource($ServiceName)
        }
    }
}

Assert-Administrator
switch ($Action) {
    'install' { Install-Postgrey }
    'start' { Start-Service -Name $ServiceName; Get-Service -Name $ServiceName }
    'stop' { Stop-Service -Name $ServiceName; Get-Service -Name $ServiceName }
    'remove' { Remove-Postgrey }
}
