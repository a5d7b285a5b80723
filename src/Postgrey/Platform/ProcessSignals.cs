using System.Runtime.InteropServices;

namespace Postgrey.Platform;

/// <summary>
/// The signals an admin sends, caught from the first moment of the process, so that one sent
/// while it is still starting is acted on, not fatal: SIGHUP reloads the whitelists (once they
/// are loaded, if it came earlier); the first SIGTERM/SIGINT stops gracefully (listeners
/// closed, requests in flight answered, database closed); a second one ends the process at
/// once. Nothing answered is lost by that: every answer left after its COMMIT. A repeat within
/// a second is the same request, not a second one: `timeout` and some init scripts signal the
/// process and then its whole process group.
/// </summary>
internal sealed class ProcessSignals : IDisposable
{
    private readonly List<PosixSignalRegistration> _registrations = [];
    private Action _beforeExit = () => { };
    private readonly object _gate = new();
    private Action? _stop;
    private Action? _reload;
    private bool _stopPending;
    private bool _reloadPending;
    private int _stops;
    private long _firstStop;

    /// <summary>Made first thing in Main: until then SIGHUP's default action, ending the process,
    /// is in force, and any code before (parsing the flags loads and compiles a good deal) makes
    /// that window longer.</summary>
    public ProcessSignals()
    {
        _registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnStop));
        _registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, OnStop));
        if (OperatingSystem.IsLinux())
        {
            // An ignored SIGHUP (-d's foreground process ignores it for the daemon it starts,
            // nohup does too) is inherited, and .NET leaves an ignored signal ignored: the
            // handler below would never run. Default first, then at once the handler.
            Libc.DefaultHangUp();
        }
        if (!OperatingSystem.IsWindows())
        {
            _registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnReload));
        }
    }

    /// <summary>What a second stop signal does before the process ends (write out the log).</summary>
    public void OnExitAtOnce(Action beforeExit) => _beforeExit = beforeExit;

    /// <summary>True once a stop signal came and nothing was attached to act on it: the start
    /// checks it before each step, so a stop sent while starting ends it before it serves.</summary>
    public bool StopRequested
    {
        get
        {
            lock (_gate)
            {
                return _stopPending;
            }
        }
    }

    /// <summary>What stops the service; a stop asked for before this runs at once.</summary>
    public void AttachStop(Action stop)
    {
        if (Attach(ref _stop, ref _stopPending, stop))
        {
            stop();
        }
    }

    /// <summary>What reloads the whitelists; a reload asked for before this runs at once.</summary>
    public void AttachReload(Action reload)
    {
        if (Attach(ref _reload, ref _reloadPending, reload))
        {
            _ = Task.Run(reload);
        }
    }

    /// <summary>Sets the action; true when its signal came before.</summary>
    private bool Attach(ref Action? slot, ref bool pending, Action action)
    {
        lock (_gate)
        {
            slot = action;
            return pending;
        }
    }

    private void OnStop(PosixSignalContext context)
    {
        context.Cancel = true;
        long now = Environment.TickCount64;
        if (Interlocked.CompareExchange(ref _firstStop, now, 0) != 0 && now - Interlocked.Read(ref _firstStop) < 1000)
        {
            return; // the same stop, delivered twice
        }
        if (Interlocked.Increment(ref _stops) >= 2)
        {
            _beforeExit();
            if (OperatingSystem.IsLinux())
            {
                Libc.ExitNow(1);
            }
            Environment.Exit(1);
        }
        Action? stop;
        lock (_gate)
        {
            stop = _stop;
            _stopPending = stop is null;
        }
        stop?.Invoke();
    }

    private void OnReload(PosixSignalContext context)
    {
        context.Cancel = true; // SIGHUP reloads; it must not end the process
        Action? reload;
        lock (_gate)
        {
            reload = _reload;
            _reloadPending = reload is null;
        }
        if (reload is not null)
        {
            _ = Task.Run(reload);
        }
    }

    public void Dispose()
    {
        foreach (PosixSignalRegistration registration in _registrations)
        {
            registration.Dispose();
        }
    }
}
