using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Identity;

namespace Postgrey.Identity;

/// <summary>
/// --lookup-by-identity: the network part of a key is, in this order,
/// <list type="number">
/// <item>the sender's domain when its SPF policy passes the client address (and the pass
/// proves something: <see cref="SpfCheck"/>);</item>
/// <item>else the registrable domain of the client's verified host name (Postfix sends
/// "unknown" for a name that is not forward-confirmed), unless the name looks dynamic
/// (<see cref="DynamicNames"/>) or no Public Suffix List could be read;</item>
/// <item>else postgrey's subnet key.</item>
/// </list>
/// All of it runs on the thread pool: the caller (a transport's loop) gets a pending task at
/// once. DNS problems of a domain are logged once an hour.
/// </summary>
public sealed partial class IdentityResolver : IKeyIdentityResolver, IDisposable
{
    private static readonly TimeSpan ProblemLogInterval = TimeSpan.FromHours(1);
    private const int MaxProblemDomains = 10_000;

    private readonly DnsCache _dns;
    private readonly SpfCheck _spf;
    private readonly PublicSuffixList? _psl;
    private readonly TimeSpan _timeout;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, long> _lastProblem = new(StringComparer.Ordinal);

    public IdentityResolver(IdentityOptions options, TimeProvider time, ILogger<IdentityResolver> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        _timeout = options.Timeout;
        _time = time;
        _logger = logger;
        _dns = new DnsCache(options.DnsServer is { } server ? [server] : [], options.DnsPort, options.Timeout, time);
        _spf = new SpfCheck(_dns);
        try
        {
            _psl = PublicSuffixList.Load(options.PublicSuffixListPath);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Log.NoPublicSuffixList(_logger, options.PublicSuffixListPath, ex.Message);
        }
    }

    /// <summary>Whether the host-name rule is on (the Public Suffix List was read).</summary>
    public bool HostRuleEnabled => _psl is not null;

    public ValueTask<KeyIdentity> ResolveAsync(IPAddress client, string clientName, string sender, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(clientName);
        ArgumentNullException.ThrowIfNull(sender);
        // Off the caller's thread from the first instruction: the SPF parser and validator do
        // real work even when every answer is cached.
        return new ValueTask<KeyIdentity>(Task.Run(() => ResolveCoreAsync(client, clientName, sender, cancellationToken), cancellationToken));
    }

    private async Task<KeyIdentity> ResolveCoreAsync(IPAddress client, string clientName, string sender, CancellationToken cancellationToken)
    {
        string? domain = SenderDomain(sender);
        if (domain is not null)
        {
            SpfResult spf = await CheckWithinTimeoutAsync(client, domain, sender, cancellationToken).ConfigureAwait(false);
            if (spf.Verdict == SpfVerdict.Pass)
            {
                return new KeyIdentity(KeyForm.Spf, domain);
            }
            if (spf.Verdict is SpfVerdict.TempError or SpfVerdict.PermError or SpfVerdict.Timeout or SpfVerdict.WeakPass)
            {
                ReportProblem(domain, spf);
            }
        }
        return HostIdentity(client, clientName) ?? KeyIdentity.Subnet;
    }

    /// <summary>Rule 2 alone (no DNS): the registrable domain of a verified, non-dynamic name.</summary>
    public KeyIdentity? HostIdentity(IPAddress client, string clientName)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(clientName);
        if (_psl is null || clientName.Length == 0 || string.Equals(clientName, "unknown", StringComparison.OrdinalIgnoreCase)
            || !IsHostName(clientName))
        {
            return null;
        }
        string name = clientName.TrimEnd('.').ToLowerInvariant();
        string? registrable = _psl.RegistrableDomain(name);
        if (registrable is null)
        {
            return null;
        }
        string hostPart = name.Length > registrable.Length ? name[..(name.Length - registrable.Length - 1)] : "";
        return DynamicNames.LooksDynamic(hostPart, client) ? null : new KeyIdentity(KeyForm.Host, registrable);
    }

    private async Task<SpfResult> CheckWithinTimeoutAsync(IPAddress client, string domain, string sender, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_timeout);
        try
        {
            // WaitAsync as well: the answer comes at the deadline even if some part of the
            // library did not look at the token.
            return await _spf.CheckAsync(client, domain, sender, deadline.Token)
                .WaitAsync(_timeout, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new SpfResult(SpfVerdict.Timeout, "no answer within " + _timeout.TotalSeconds + "s");
        }
        catch (TimeoutException)
        {
            return new SpfResult(SpfVerdict.Timeout, "no answer within " + _timeout.TotalSeconds + "s");
        }
        catch (Exception ex) when (ex is not OperationCanceledException and not OutOfMemoryException)
        {
            // Never let a library bug take a decision down: the subnet key it is.
            return new SpfResult(SpfVerdict.PermError, ex.GetType().Name + ": " + ex.Message);
        }
    }

    /// <summary>The domain after the last '@', lower-case, when it looks like a domain.</summary>
    internal static string? SenderDomain(string sender)
    {
        int at = sender.LastIndexOf('@');
        if (at < 0 || at == sender.Length - 1)
        {
            return null; // the null sender: nothing to check (its bounces are one-shot)
        }
        string domain = sender[(at + 1)..].TrimEnd('.').ToLowerInvariant();
        return IsHostName(domain) ? domain : null;
    }

    /// <summary>Letters, digits, dashes, underscores, dots; two labels at least, none empty,
    /// no longer than DNS allows.</summary>
    private static bool IsHostName(string name)
    {
        string trimmed = name.TrimEnd('.');
        if (trimmed.Length is 0 or > 253 || !trimmed.Contains('.', StringComparison.Ordinal))
        {
            return false;
        }
        foreach (string label in trimmed.Split('.'))
        {
            if (label.Length is 0 or > 63 || !label.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                return false;
            }
        }
        // An address literal is no name.
        return !IPAddress.TryParse(trimmed, out _);
    }

    private void ReportProblem(string domain, SpfResult result)
    {
        long now = _time.GetTimestamp();
        if (_lastProblem.TryGetValue(domain, out long last) && _time.GetElapsedTime(last, now) < ProblemLogInterval)
        {
            return;
        }
        if (_lastProblem.Count >= MaxProblemDomains)
        {
            foreach (var entry in _lastProblem)
            {
                if (_time.GetElapsedTime(entry.Value, now) >= ProblemLogInterval)
                {
                    _lastProblem.TryRemove(entry.Key, out _);
                }
            }
        }
        _lastProblem[domain] = now;
        Log.SpfProblem(_logger, domain, Name(result.Verdict), result.Problem ?? "");
    }

    private static string Name(SpfVerdict verdict) => verdict switch
    {
        SpfVerdict.TempError => "temperror",
        SpfVerdict.PermError => "permerror",
        SpfVerdict.Timeout => "timeout",
        SpfVerdict.WeakPass => "pass that proves nothing",
        _ => verdict.ToString().ToLowerInvariant(),
    };

    public void Dispose() => _dns.Dispose();

    private static partial class Log
    {
        [LoggerMessage(7001, LogLevel.Warning, "SPF of {Domain}: {Verdict} ({Problem}); keying on the host name or subnet (said once an hour per domain)", EventName = "SpfProblem")]
        public static partial void SpfProblem(ILogger logger, string domain, string verdict, string problem);

        [LoggerMessage(7002, LogLevel.Warning, "can't read the Public Suffix List {Path} ({Reason}): --lookup-by-identity keys on SPF and the subnet only", EventName = "NoPublicSuffixList")]
        public static partial void NoPublicSuffixList(ILogger logger, string path, string reason);
    }
}
