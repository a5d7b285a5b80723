using System.Net;
using System.Net.Sockets;
using ARSoft.Tools.Net;
using ARSoft.Tools.Net.Dns;
using ARSoft.Tools.Net.Spf;
using SpfRecord = ARSoft.Tools.Net.Spf.SpfRecord;

namespace Postgrey.Identity;

/// <summary>What an SPF check came to, with the two outcomes of our own.</summary>
public enum SpfVerdict
{
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,

    /// <summary>No answer within the time bound.</summary>
    Timeout,

    /// <summary>A pass that proves nothing: the policy authorises (nearly) everyone.</summary>
    WeakPass,
}

/// <summary>An SPF verdict, with what went wrong when something did.</summary>
public readonly record struct SpfResult(SpfVerdict Verdict, string? Problem = null);

/// <summary>
/// RFC 7208's check_host() by ARSoft.Tools.Net's <see cref="SpfValidator"/> over the shared
/// <see cref="DnsCache"/>, within a time bound, with RFC 7208's lookup limits (section 4.6.4;
/// see <see cref="SpfLookupScope"/>), and a pass that proves nothing told apart
/// (<see cref="IsWeakAsync"/>).
/// </summary>
public sealed class SpfCheck
{
    /// <summary>A pass mechanism wider than this many IPv4 prefix bits proves nothing: a /13 is
    /// 524,288 addresses. The widest range the big providers publish is Microsoft 365's /14
    /// (52.100.0.0/14); Google's and Amazon SES's are /16 or narrower.</summary>
    public const int WidestIPv4Prefix = 13;

    /// <summary>The same for IPv6: a /32 is a whole ISP's allocation.</summary>
    public const int WidestIPv6Prefix = 32;

    /// <summary>Documentation addresses (RFC 5737, RFC 3849) that no real sender uses: a policy
    /// that passes them passes everyone (+all, an exists: on a wildcard, ...).</summary>
    public static readonly IPAddress ProbeIPv4 = IPAddress.Parse("192.0.2.1");

    public static readonly IPAddress ProbeIPv6 = IPAddress.Parse("2001:db8::1");

    private const int MaxRecordsWalked = 10;

    private readonly DnsCache _cache;

    public SpfCheck(DnsCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        _cache = cache;
        RootEnumArrays();
    }

    /// <summary>Native AOT: ARSoft's EnumHelper&lt;T&gt; makes its T[] with Enum.GetValues(Type),
    /// which finds an array type only if the program has it compiled in; without these, every
    /// SPF record in the AOT build failed to parse ("SpfMechanismType[] is missing native
    /// code"). Enum.GetValues&lt;T&gt;() makes the compiler keep each one.</summary>
    private static void RootEnumArrays()
    {
        _ = Enum.GetValues<SpfMechanismType>();
        _ = Enum.GetValues<SpfModifierType>();
        _ = Enum.GetValues<SpfQualifier>();
    }

    /// <summary>check_host(client, domain, sender); a pass that proves nothing is <see cref="SpfVerdict.WeakPass"/>.
    /// Never throws but for <paramref name="cancellationToken"/>.</summary>
    public async Task<SpfResult> CheckAsync(IPAddress client, string domain, string sender, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(domain);
        if (!DomainName.TryParse(domain, out DomainName? parsed) || parsed is not { LabelCount: >= 2 } name)
        {
            return new SpfResult(SpfVerdict.None);
        }

        SpfResult result = await EvaluateAsync(client, name, sender, cancellationToken).ConfigureAwait(false);
        if (result.Verdict != SpfVerdict.Pass)
        {
            return result;
        }

        string? wide = await IsWeakAsync(name, cancellationToken).ConfigureAwait(false);
        if (wide is not null)
        {
            return new SpfResult(SpfVerdict.WeakPass, wide);
        }
        // A pass for the documentation address too: the policy lets anyone in, in a way the
        // records do not show (an exists: on a wildcard, a macro, ...).
        IPAddress probe = client.AddressFamily == AddressFamily.InterNetworkV6 ? ProbeIPv6 : ProbeIPv4;
        SpfResult probed = await EvaluateAsync(probe, name, sender, cancellationToken).ConfigureAwait(false);
        return probed.Verdict == SpfVerdict.Pass ? new SpfResult(SpfVerdict.WeakPass, "passes " + probe + " too") : result;
    }

    private async Task<SpfResult> EvaluateAsync(IPAddress client, DomainName domain, string sender, CancellationToken cancellationToken)
    {
        var scope = new SpfLookupScope(_cache);
        var validator = new SpfValidator { DnsResolver = scope, LocalDomain = DomainName.Parse("localhost") };
        ValidationResult validated;
        try
        {
            validated = await validator.CheckHostAsync(client, domain, sender, expandExplanation: false, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A record the parser chokes on, a macro that expands to garbage, ...; a broken
            // static constructor of the library says which one and why.
            return new SpfResult(SpfVerdict.PermError, ex is TypeInitializationException init
                ? init.TypeName + ": " + (init.InnerException?.Message ?? init.Message)
                : ex.Message);
        }
        // The validator turns a cancelled lookup into temperror: it is the time bound.
        cancellationToken.ThrowIfCancellationRequested();
        if (scope.LimitExceeded)
        {
            return new SpfResult(SpfVerdict.PermError, scope.LastFailure ?? "lookup limit exceeded");
        }
        return validated.Result switch
        {
            SpfQualifier.Pass => new SpfResult(SpfVerdict.Pass),
            SpfQualifier.Fail => new SpfResult(SpfVerdict.Fail),
            SpfQualifier.SoftFail => new SpfResult(SpfVerdict.SoftFail),
            SpfQualifier.Neutral => new SpfResult(SpfVerdict.Neutral),
            SpfQualifier.None => new SpfResult(SpfVerdict.None),
            SpfQualifier.TempError => new SpfResult(SpfVerdict.TempError, scope.LastFailure ?? "no usable DNS answer"),
            _ => new SpfResult(SpfVerdict.PermError, "invalid record or lookup limit"),
        };
    }

    /// <summary>Why the policy of <paramref name="domain"/>, with its include:s and redirect=,
    /// proves nothing even where it passes (a pass mechanism wider than /13 IPv4 or /32 IPv6,
    /// or +all), or null. Names built from macros are not followed.</summary>
    internal async Task<string?> IsWeakAsync(DomainName domain, CancellationToken cancellationToken)
    {
        var seen = new HashSet<DomainName>();
        var todo = new Queue<DomainName>();
        todo.Enqueue(domain);
        while (todo.Count > 0 && seen.Count < MaxRecordsWalked)
        {
            DomainName current = todo.Dequeue();
            if (!seen.Add(current))
            {
                continue;
            }
            SpfRecord? record = await LoadAsync(current, cancellationToken).ConfigureAwait(false);
            if (record is null)
            {
                continue;
            }
            foreach (SpfTerm term in record.Terms)
            {
                if (term is SpfMechanism mechanism)
                {
                    if (mechanism.Qualifier == SpfQualifier.Pass && TooWide(mechanism) is { } why)
                    {
                        return current.ToString().TrimEnd('.') + ": " + why;
                    }
                    if (mechanism.Type == SpfMechanismType.Include && Followable(mechanism.Domain) is { } included)
                    {
                        todo.Enqueue(included);
                    }
                }
                else if (term is SpfModifier { Type: SpfModifierType.Redirect } redirect && Followable(redirect.Domain) is { } target)
                {
                    todo.Enqueue(target);
                }
            }
        }
        return null;
    }

    private static string? TooWide(SpfMechanism mechanism)
    {
        switch (mechanism.Type)
        {
            case SpfMechanismType.All:
                return "+all";
            case SpfMechanismType.Ip4 when mechanism.Prefix is { } bits && bits < WidestIPv4Prefix:
            case SpfMechanismType.A or SpfMechanismType.Mx when mechanism.Prefix is { } v4 && v4 < WidestIPv4Prefix:
                return mechanism + " is wider than /" + WidestIPv4Prefix;
            case SpfMechanismType.Ip6 when mechanism.Prefix is { } bits6 && bits6 < WidestIPv6Prefix:
            case SpfMechanismType.A or SpfMechanismType.Mx when mechanism.Prefix6 is { } v6 && v6 < WidestIPv6Prefix:
                return mechanism + " is wider than /" + WidestIPv6Prefix;
            default:
                return null;
        }
    }

    private static DomainName? Followable(string? name) =>
        !string.IsNullOrEmpty(name) && !name.Contains('%', StringComparison.Ordinal) && DomainName.TryParse(name, out DomainName? parsed) ? parsed : null;

    private async Task<SpfRecord?> LoadAsync(DomainName domain, CancellationToken cancellationToken)
    {
        try
        {
            DnsAnswer answer = await _cache.LookupAsync(domain, RecordType.Txt, cancellationToken).ConfigureAwait(false);
            var spf = answer.Records.OfType<TxtRecord>().Select(t => t.TextData).Where(SpfRecord.IsSpfRecord).ToList();
            return spf.Count == 1 && SpfRecord.TryParse(spf[0], out SpfRecord? record) ? record : null;
        }
        catch (DnsLookupException)
        {
            return null;
        }
    }
}
